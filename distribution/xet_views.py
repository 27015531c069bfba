"""The CAS calls a Hub client makes to upload by Xet, under `/xet/ORG/NAME/` (the casUrl its write token
came with): xorbs, shards, and the dedup query it asks first (answered from the repo's own xorbs). Each
call carries the Xet token in `Authorization: Bearer`, checked against the repo in the path."""

from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from access.gate import AccessDenied
from distribution import xet, xet_formats
from distribution.lfs import Refused
from hub.errors import hf_error
from hub.rate_limits import caller_key, rate_limited

# A shard lists files and xorbs in 48-byte records: the client cuts one well below this.
SHARD_MAX_BYTES = 64 * 1024 * 1024
# hf_xet asks under `default`; the specification's examples name the older `default-merkledb`.
DEDUP_PREFIXES = ("default", "default-merkledb")


def cas_call(view):
    """Check the Xet token for the repo in the path (`request.cas`) and answer refusals as the Hub does."""

    @csrf_exempt
    def wrapper(request, org, name, *args, **kwargs):
        try:
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not value:
                raise Refused("send the Xet token from xet-write-token as Authorization: Bearer <token>", 401)
            request.cas = xet.cas_access(value.strip(), org, name)
            request.hf_user, request.hf_token = request.cas.user, request.cas.api_token
            return limited_view(request, *args, **kwargs)
        except Refused as refused:
            return hf_error(refused.status, refused.message)
        except AccessDenied as denied:
            return hf_error(denied.status, denied.message, denied.code)

    # Counted with the caller's other Hub calls: under the API token the Xet token was issued for.
    @rate_limited(lambda request, *args, **kwargs: caller_key(request))
    def limited_view(request, *args, **kwargs):
        return view(request, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = view.__name__, view.__doc__
    return wrapper


def bounded_body(request, limit: int, what: str) -> bytes:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        raise Refused(f"send the {what} with a Content-Length", 411) from None
    if length > limit:
        raise Refused(f"the {what} has {length} bytes, over the {limit} this portal takes", 413)
    data = request.read(length)
    if len(data) != length:
        raise Refused(f"the {what} was cut off: {len(data)} of {length} bytes arrived", 400)
    return data


@require_POST
@cas_call
def xorb(request, prefix, xorb_hash):
    """`POST .../v1/xorbs/default/HASH`: a xorb for the repo (`was_inserted` false when it holds it)."""
    if prefix != "default":
        raise Refused(f"xorbs go under the prefix default, not {prefix!r}")
    data = bounded_body(request, xet_formats.XORB_MAX_BYTES, "xorb")
    return JsonResponse({"was_inserted": xet.store_xorb(request.cas, xorb_hash, data)})


@require_POST
@cas_call
def shard(request):
    """`POST .../v1/shards`: the files the shard records, checked against the xorbs and handed to a worker to
    rebuild and accept (or the shard refused)."""
    xet.register_shard(request.cas, bounded_body(request, SHARD_MAX_BYTES, "shard"))
    return JsonResponse({"result": 1})


@require_GET
@cas_call
def chunk(request, prefix, chunk_hash):
    """`GET .../v1/chunks/PREFIX/HASH`: the dedup query, answered with a shard listing the xorbs of this
    repo that hold the chunk (and those uploaded after it), or 404, which the client reads as 'send it'."""
    if prefix not in DEDUP_PREFIXES:
        raise Refused(f"dedup queries go under the prefix default, not {prefix!r}")
    shard = xet.dedup_answer(request.cas, chunk_hash)
    if shard is None:
        return hf_error(404, f"{request.cas.repo.repo_id} holds no xorb with chunk {chunk_hash} to dedup against")
    return HttpResponse(shard, content_type="application/octet-stream")


@csrf_exempt
def not_offered(request, org, name, call):
    """The calls hf_xet tries before a plain one (upload grants, streaming shards): 404, it falls back."""
    return hf_error(404, f"{call} is not offered here: use the v1 xorb and shard calls")
