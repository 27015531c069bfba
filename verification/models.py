from django.db import models
from django.utils import timezone


class CheckResult(models.Model):
    """One finding of a verification run on a revision, shown to publishers and staff."""

    class Status(models.TextChoices):
        PASS = "pass"
        WARN = "warn"
        FAIL = "fail"

    revision = models.ForeignKey("distribution.Revision", on_delete=models.CASCADE, related_name="checks")
    name = models.CharField(max_length=40)
    status = models.CharField(max_length=8, choices=Status.choices)
    code = models.CharField(max_length=60)
    file = models.CharField(max_length=512, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.status} {self.name}/{self.code} {self.file}"
