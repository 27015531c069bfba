{% autoescape off %}#!/usr/bin/env bash
# Weightgate download script for {{ m.repo }} at revision {{ m.revision }}
# Generated {{ generated|date:"Y-m-d H:i" }} UTC. The links below expire at {{ m.expires_at }} and serve
# {{ m.max_uses }} requests in all; get new ones at {{ m.renew_at }}
#
# Needs bash and curl or wget. Run it again to resume: finished files are kept, partial ones continue.
# PARALLEL=N sets how many files download at once (default 4).
set -u
PARALLEL="${PARALLEL:-4}"
PREFIX={{ prefix_quoted }}
RENEW={{ renew_quoted }}
FILES={{ files_quoted }}

# fetch FILE URL resumes FILE from URL; explain URL prints why the portal refuses it, if it does.
if command -v curl >/dev/null 2>&1; then
  fetch() { curl --fail --silent --show-error --location --retry 3 --continue-at - --output "$1" "$2"; }
  explain() { curl --silent --head "$1" | tr -d '\r' | sed -n 's/^[Xx]-[Ee]rror-[Mm]essage: //p' | head -n 1; }
elif command -v wget >/dev/null 2>&1; then
  fetch() { wget --quiet --continue --tries=3 --output-document="$1" "$2"; }
  explain() { wget --server-response --spider "$1" 2>&1 | tr -d '\r' | sed -n 's/^ *[Xx]-[Ee]rror-[Mm]essage: //p' | head -n 1; }
else
  echo "This script needs curl or wget; install one and run it again." >&2
  exit 2
fi
if command -v sha256sum >/dev/null 2>&1; then
  digest() { sha256sum "$1" | cut -d' ' -f1; }
else
  digest() { shasum -a 256 "$1" | cut -d' ' -f1; }
fi
size_of() { wc -c < "$1" | tr -d ' '; }

failures="$(mktemp)"
trap 'rm -f "$failures"' EXIT

one() {
  local path="$1" size="$2" sum="$3"
  mkdir -p "$(dirname "$path")"
  if [ -f "$path" ] && [ "$(size_of "$path")" = "$size" ] && [ "$(digest "$path")" = "$sum" ]; then
    echo "ok      $path (already complete)"
    return 0
  fi
  if [ -f "$path" ] && [ "$(size_of "$path")" -ge "$size" ]; then
    rm -f "$path"  # complete but wrong, or longer than it should be: start over
  fi
  if ! fetch "$path" "$PREFIX/$path"; then
    reason="$(explain "$PREFIX/$path")"
    echo "FAILED  $path: ${reason:-the download stopped}. Run this script again to resume; if the links expired, get new ones at $RENEW" >&2
    echo "$path" >> "$failures"
    return 1
  fi
  if [ "$(digest "$path")" != "$sum" ]; then
    mv -f "$path" "$path.corrupt"
    echo "FAILED  $path: its sha256 is not $sum (kept as $path.corrupt). Run this script again to fetch it anew." >&2
    echo "$path" >> "$failures"
    return 1
  fi
  echo "ok      $path"
}

while IFS='|' read -r path size sum; do
  [ -n "$path" ] || continue
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n; done
  one "$path" "$size" "$sum" &
done <<< "$FILES"
wait

if [ -s "$failures" ]; then
  echo "$(wc -l < "$failures" | tr -d ' ') file(s) failed: $(tr '\n' ' ' < "$failures")" >&2
  exit 1
fi
echo "All files of {{ m.repo }}@{{ m.revision }} downloaded and verified."
{% endautoescape %}