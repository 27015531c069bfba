"""The request form a repo defines: checking answers against it, and rendering it as a Django form."""

import datetime

from django import forms
from django_countries import countries


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
