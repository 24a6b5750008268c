"""A django-oauth-toolkit OpenID Provider for gatehouse's tests.

Everything that varies per run comes from the environment (set by serve.py):
DOT_STATE_DIR  a private directory holding the SQLite database and the RSA signing key
DOT_ISSUER     the issuer, e.g. http://127.0.0.4:PORT/o (plain http on loopback)
DOT_SECRET_KEY Django's secret key, random per run
DOT_AUTHZ_RESPONSE_ISS "1": RFC 9207 `iss` in authorization responses (DOT's default: off)
"""
import os
from pathlib import Path
from urllib.parse import urlsplit

STATE_DIR = Path(os.environ["DOT_STATE_DIR"])
ISSUER = os.environ["DOT_ISSUER"]
SECRET_KEY = os.environ["DOT_SECRET_KEY"]

DEBUG = False
ALLOWED_HOSTS = [urlsplit(ISSUER).hostname]
ROOT_URLCONF = "testop.urls"
WSGI_APPLICATION = None
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
    "testop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": STATE_DIR / "provider.sqlite3",
        "OPTIONS": {
            # The server's threads and the registration command write at the same time.
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Fast password hashing: test users only.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LOGIN_URL = "/accounts/login/"
SESSION_COOKIE_NAME = "dot_session"
CSRF_COOKIE_NAME = "dot_csrftoken"

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_ISS_ENDPOINT": ISSUER,
    "OIDC_RSA_PRIVATE_KEY": (STATE_DIR / "oidc-signing-key.pem").read_text(),
    "OAUTH2_VALIDATOR_CLASS": "testop.validators.ClaimsValidator",
    "SCOPES": {
        "openid": "OpenID Connect",
        "profile": "Your name and username",
        "email": "Your email address",
    },
    "DEFAULT_SCOPES": ["openid"],
    "PKCE_REQUIRED": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("DOT_ACCESS_TOKEN_TTL", "3600")),
    "ID_TOKEN_EXPIRE_SECONDS": int(os.environ.get("DOT_ID_TOKEN_TTL", "86400")),
    "REFRESH_TOKEN_EXPIRE_SECONDS": 86400,
    # Rotation, and a replayed (rotated) refresh token revokes its whole family.
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    # RP-initiated logout: with an id_token_hint of the logged-in user no confirmation
    # is asked, and the user's tokens are deleted.
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
    "OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT": False,
    "OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS": True,
    # What DOT's next major release makes the default (RFC 9700). RFC 9207 `iss` in
    # authorization responses stays DOT's current default (off) unless asked for: DOT
    # 3.4.1 leaves it out of its prompt=none login_required answer while advertising it,
    # and a client that checks it (gatehouse does) must then refuse that answer.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": os.environ.get("DOT_AUTHZ_RESPONSE_ISS") == "1",
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
