"""Standard claims for the test users (DOT's documented way: get_additional_claims)."""
from oauth2_provider.oauth2_validators import OAuth2Validator


class ClaimsValidator(OAuth2Validator):
    def get_additional_claims(self, request):
        user = request.user
        return {
            "preferred_username": user.username,
            "name": user.username.capitalize(),
            "email": f"{user.username}@example.test",
            "email_verified": True,
        }

    # oauthlib asks these two for prompt=none and DOT leaves them unimplemented (a 500
    # without them). The authorization view runs validation for a signed-in user only (an
    # anonymous prompt=none gets DOT's own login_required), so a silent login is one
    # with a session; a silent authorization needs no consent page.
    def validate_silent_login(self, request):
        return True

    def validate_silent_authorization(self, request):
        return bool(getattr(request.client, "skip_authorization", False))
