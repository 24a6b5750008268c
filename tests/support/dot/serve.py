#!/usr/bin/env python3
"""Starts the django-oauth-toolkit test provider (see README.md).

    serve.py --host 127.0.0.4 --port PORT --state-dir DIR [--authz-response-iss] [--watch-stdin]

Generates the RSA signing key and Django's secret key into DIR (a private directory of
this run, never the repository), creates the SQLite database there, and serves on
http://HOST:PORT with the issuer http://HOST:PORT/o. It exits when its stdin closes, so
a parent that holds the write end of a pipe takes it down with it.
"""
import argparse
import os
import secrets
import socketserver
import subprocess
import sys
import threading
from pathlib import Path
from wsgiref import simple_server

HERE = Path(__file__).resolve().parent


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


def signing_key_pem():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Handler(simple_server.WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        # The path only: queries carry codes, states and ID token hints.
        path = self.path.split("?", 1)[0]
        sys.stderr.write(f"dot: {self.command} {path} {code}\n")

    def log_message(self, format, *args):
        pass


class Server(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


def watch_stdin():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.4")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--watch-stdin", action="store_true")
    parser.add_argument("--authz-response-iss", action="store_true")
    args = parser.parse_args()

    state = Path(args.state_dir)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    state.chmod(0o700)
    key_file = state / "oidc-signing-key.pem"
    if not key_file.exists():
        write_private(key_file, signing_key_pem())
    secret_file = state / "django-secret-key"
    if not secret_file.exists():
        write_private(secret_file, secrets.token_urlsafe(50))
    env = {
        "DJANGO_SETTINGS_MODULE": "testop.settings",
        "DOT_STATE_DIR": str(state),
        "DOT_ISSUER": f"http://{args.host}:{args.port}/o",
        "DOT_SECRET_KEY": secret_file.read_text(),
        "DOT_AUTHZ_RESPONSE_ISS": "1" if args.authz_response_iss else "0",
    }
    os.environ.update(env)
    # The environment a registration command needs, for the parent to reuse.
    write_private(state / "env", "".join(f"{k}={v}\n" for k, v in env.items()))

    sys.path.insert(0, str(HERE))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)

    from django.core.wsgi import get_wsgi_application

    if args.watch_stdin:
        threading.Thread(target=watch_stdin, daemon=True).start()
    server = simple_server.make_server(
        args.host, args.port, get_wsgi_application(), server_class=Server, handler_class=Handler
    )
    sys.stderr.write(f"dot: serving {env['DOT_ISSUER']}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
