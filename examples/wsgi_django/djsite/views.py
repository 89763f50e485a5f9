"""Views of the example Django site: ordinary blocking Django code."""

import time

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

# Long enough that a request served meanwhile clearly did not wait for it.
SLOW_VIEW_SECONDS = 1.0


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello from Django", content_type="text/plain")


def slow(request: HttpRequest) -> HttpResponse:
    # Stands for a slow query or a call to another service: it blocks its
    # thread, which under squall's WSGIContainer is a pool thread, not the
    # event loop.
    time.sleep(SLOW_VIEW_SECONDS)
    return HttpResponse("slow Django view done", content_type="text/plain")


@csrf_exempt
def echo(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"method": request.method, "form": request.POST.dict(), "query": request.GET.dict()})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse((f"line {i}\n" for i in range(3)), content_type="text/plain")
