"""URLs of the example Django site."""

from django.urls import path

from djsite import views

urlpatterns = [
    path("", views.home),
    path("slow", views.slow),
    path("echo", views.echo),
    path("stream", views.stream),
]
