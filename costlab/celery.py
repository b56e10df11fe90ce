import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costlab.settings")

app = Celery("costlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
