"""The request form a repo defines: checking answers against it, and rendering it as a Django form; and
the form a person makes an API token with."""

import datetime

from django import forms
from django.utils import timezone
from django_countries import countries

from access.gate import usable_scopes, visible_repos
from access.models import Scope


def clean_answers(fields: list[dict], answers: dict) -> tuple[dict, dict[str, str]]:
    """(cleaned answers, errors by field name). Unknown answers are dropped, not stored."""
    if not isinstance(answers, dict):
        return {}, {"fields": "answers must be an object mapping field names to values"}
    cleaned, errors = {}, {}
    for field in fields:
        name, kind = field["name"], field["type"]
        value = answers.get(name)
        if value in (None, "") or (kind == "checkbox" and value is False):
            if field.get("required"):
                errors[name] = f"{field.get('label') or name} is required"
            elif kind == "checkbox":
                cleaned[name] = False
            continue
        if kind in ("text", "long_text"):
            limit = 300 if kind == "text" else 5000
            if not isinstance(value, str) or len(value) > limit:
                errors[name] = f"must be text of at most {limit} characters"
            else:
                cleaned[name] = value.strip()
        elif kind == "checkbox":
            if value not in (True, "on", "true", "1"):
                errors[name] = "must be checked or left out"
            else:
                cleaned[name] = True
        elif kind == "date":
            try:
                cleaned[name] = datetime.date.fromisoformat(str(value)).isoformat()
            except ValueError:
                errors[name] = "must be a date written YYYY-MM-DD"
        elif kind == "country":
            code = str(value).upper()
            if code not in dict(countries):
                errors[name] = "must be an ISO 3166 country code, such as FR or JP"
            else:
                cleaned[name] = code
        elif kind == "select":
            if value not in field.get("options", []):
                errors[name] = f"must be one of: {', '.join(map(str, field['options']))}"
            else:
                cleaned[name] = value
    return cleaned, errors


def request_form(fields: list[dict], data=None) -> forms.Form:
    """A Django form for the repo page, one input per field, plus the license checkbox."""
    form = forms.Form(data)
    for field in fields:
        label = field.get("label") or field["name"].replace("_", " ").capitalize()
        required = bool(field.get("required"))
        kind = field["type"]
        if kind == "long_text":
            form.fields[field["name"]] = forms.CharField(label=label, required=required, widget=forms.Textarea)
        elif kind == "checkbox":
            form.fields[field["name"]] = forms.BooleanField(label=label, required=required)
        elif kind == "date":
            form.fields[field["name"]] = forms.DateField(
                label=label, required=required, widget=forms.DateInput(attrs={"type": "date"})
            )
        elif kind == "country":
            form.fields[field["name"]] = forms.ChoiceField(
                label=label, required=required, choices=[("", "—"), *countries]
            )
        elif kind == "select":
            form.fields[field["name"]] = forms.ChoiceField(
                label=label, required=required, choices=[("", "—"), *[(o, o) for o in field["options"]]]
            )
        else:
            form.fields[field["name"]] = forms.CharField(label=label, required=required, max_length=300)
    form.fields["accept_license"] = forms.BooleanField(label="I accept the license", required=True)
    return form


# How long a new token works: offered on the account page, 90 days chosen unless the person changes it.
TOKEN_LIFETIMES = [("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "a year"), ("", "never expires")]


class TokenForm(forms.Form):
    """A new API token: its name, what it may do (read only unless chosen), how long, and which repos."""

    name = forms.CharField(max_length=100, required=False, empty_value="token")
    scopes = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "choose at least one scope; read is what downloads take"},
    )
    expires_in_days = forms.TypedChoiceField(
        choices=TOKEN_LIFETIMES, coerce=int, empty_value=None, required=False, initial="90", label="Expires"
    )
    repos = forms.ModelMultipleChoiceField(
        queryset=None,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Only these repos",
        help_text="none chosen: every repo you have access to",
    )

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["scopes"].choices = [(scope.value, scope.label) for scope in usable_scopes(user)]
        self.fields["scopes"].initial = [Scope.READ.value]
        self.fields["repos"].queryset = visible_repos(user).order_by("org", "name")

    @property
    def expires_at(self):
        days = self.cleaned_data["expires_in_days"]
        return None if days is None else timezone.now() + datetime.timedelta(days=days)

    @property
    def chosen_repos(self):
        """The repos to limit the token to; None for every repo."""
        return list(self.cleaned_data["repos"]) or None
