"""Downloads, read top to bottom: `locate` finds the file a request names and asks the gate
(access.gate) who may have it; `channels` answers by one of four channels and records the event
(`events`, or the `spool` for redirects that must not wait on the database); `fast_path` answers a
repeated redirect from the outcome of the same checks a moment ago; `links` and `tickets` are the
signed URLs people and the Hub client are sent to."""
