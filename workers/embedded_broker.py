"""The embedded broker (`filesystem://`, the default `make run` uses): kombu's filesystem transport, with
each message written under a name no reader takes and then renamed into place.

kombu's own `_put` creates the message file and then writes it, while a worker polling the folder moves
away and reads any file with a message's name: it can take the file empty or half-written, fail to
decode it, and stop ("Unrecoverable error: JSONDecodeError"). A rename within one folder is atomic, so
a reader now sees a whole message or none."""

import contextlib
import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

UNFINISHED = ".part"  # a message's file while it is written: `<time>_<uuid>.<queue>.msg.part`


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put `payload` onto `queue`, visible to readers only once it is whole."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        unfinished = final + UNFINISHED
        data = str_to_bytes(dumps(payload))  # a payload that cannot be encoded leaves no file
        try:
            with open(unfinished, "wb") as file:
                file.write(data)
            os.replace(unfinished, final)
        except OSError as error:
            with contextlib.suppress(OSError):  # never created, or already gone
                os.remove(unfinished)
            raise ChannelError(f"Cannot add file {final!r} to directory") from error


class Transport(filesystem.Transport):
    Channel = Channel
