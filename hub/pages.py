"""What every paged list shares: pages of the API's lists, and pager links that keep a list's filters."""

from rest_framework.pagination import CursorPagination, PageNumberPagination


class NewestFirst(CursorPagination):
    """A list ordered by time, newest first: a cursor, so rows added meanwhile never shift a page."""

    ordering = ("-created_at", "-id")
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class ReportPages(PageNumberPagination):
    """Pages of a report's rows (aggregates, not rows in time); its CSV form carries them all at once."""

    page_size = 500
    page_size_query_param = "page_size"
    max_page_size = 5000


def without_page(request) -> str:
    """The page's query string less its `page`, for the pager's links."""
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()
