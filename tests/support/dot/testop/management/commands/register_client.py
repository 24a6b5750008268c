"""Registers a confidential client (and makes sure a user exists); prints the client's
credentials as one JSON line: {"client_id": ..., "client_secret": ...}.

    manage.py register_client --redirect-uri URI --post-logout-redirect-uri URI \
        [--user NAME --password-file FILE]

The password comes from a file so that it never appears in a process listing.
"""
import json
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from oauth2_provider.models import get_application_model


class Command(BaseCommand):
    help = "Register a confidential OIDC client; print its credentials as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--redirect-uri", required=True)
        parser.add_argument("--post-logout-redirect-uri", required=True)
        parser.add_argument("--name", default="gatehouse")
        parser.add_argument("--user", action="append", default=[])
        parser.add_argument("--password-file")

    def handle(self, *args, **options):
        if options["user"]:
            with open(options["password_file"], encoding="utf-8") as file:
                password = file.read().strip()
            users = get_user_model()
            for name in options["user"]:
                user, _ = users.objects.get_or_create(username=name)
                user.set_password(password)
                user.save()
        application = get_application_model()
        client_secret = secrets.token_urlsafe(32)
        client = application.objects.create(
            name=options["name"],
            client_type=application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=application.GRANT_AUTHORIZATION_CODE,
            redirect_uris=options["redirect_uri"],
            post_logout_redirect_uris=options["post_logout_redirect_uri"],
            client_secret=client_secret,
            algorithm=application.RS256_ALGORITHM,
            # A first-party application: no consent page (the login form still shows).
            skip_authorization=True,
        )
        self.stdout.write(json.dumps({"client_id": client.client_id, "client_secret": client_secret}))
