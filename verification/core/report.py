"""What a verification run found: one Check per finding, plus the digest of every file."""

import json
from dataclasses import asdict, dataclass, field

PASS = "pass"
FAIL = "fail"
WARN = "warn"
# Every revision must have passed each of these before it may be released.
REQUIRED_CHECKS = ("files", "safetensors", "index", "config", "tensors", "smoke")


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    code: str
    file: str
    message: str


@dataclass(frozen=True)
class FileDigest:
    path: str
    size: int
    sha256: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    files: dict[str, FileDigest] = field(default_factory=dict)
    tensors: list[dict] = field(default_factory=list)  # per-tensor statistics, to compare revisions
    smoke: dict = field(default_factory=dict)  # what the smoke pass saw: device, greedy tokens, differences

    def add(self, name: str, status: str, code: str, message: str, file: str = "") -> None:
        self.checks.append(Check(name=name, status=status, code=code, file=file, message=message))

    def fail(self, name: str, code: str, message: str, file: str = "") -> None:
        self.add(name, FAIL, code, message, file)

    @property
    def ok(self) -> bool:
        return not any(check.status == FAIL for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.status == FAIL]

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checks": [asdict(check) for check in self.checks],
            "files": [asdict(digest) for digest in self.files.values()],
            "tensors": self.tensors,
            "smoke": self.smoke,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)
