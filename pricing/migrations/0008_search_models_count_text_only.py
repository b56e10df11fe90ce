"""The search-preview models bill only their messages' text: no per-message framing, no
name token, no reply priming (measured on the real-log corpus, see the search family in
conversations/engine/profiles.py). A price row's counting fields override the engine's
profile (PriceBook.profile), so the catalogue rows say it too. Rows an admin has changed
from the defaults (3, 1, 3) keep what they say."""

from django.db import migrations

SEARCH_MODELS = ("gpt-4o-search-preview", "gpt-4o-mini-search-preview")


def text_only(apps, schema_editor):
    ModelPrice = apps.get_model("pricing", "ModelPrice")
    ModelPrice.objects.filter(
        model__in=SEARCH_MODELS, tokens_per_message=3, tokens_per_name=1, reply_priming=3
    ).update(tokens_per_message=-1, tokens_per_name=0, reply_priming=0)


def framed(apps, schema_editor):
    ModelPrice = apps.get_model("pricing", "ModelPrice")
    ModelPrice.objects.filter(
        model__in=SEARCH_MODELS, tokens_per_message=-1, tokens_per_name=0, reply_priming=0
    ).update(tokens_per_message=3, tokens_per_name=1, reply_priming=3)


class Migration(migrations.Migration):
    dependencies = [("pricing", "0007_catalogue_gpt_audio")]
    operations = [migrations.RunPython(text_only, framed)]
