"""Django settings for the example: no database, no admin, just views."""

import os

# An example's key; a real site reads its own from the environment.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "squall-example-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "djsite.urls"
INSTALLED_APPS: list = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES: dict = {}
USE_TZ = True
