from django.contrib.auth import views as auth_views
from django.urls import include, path
from oauth2_provider import urls as oauth2_urls

urlpatterns = [
    # DOT under /o/, as its documentation sets it up: the issuer is <origin>/o.
    path("o/", include(oauth2_urls)),
    # RFC 8414 metadata at the origin's root as well (for the issuer <origin>/o that is
    # /.well-known/oauth-authorization-server/o), as DOT's documentation asks of a
    # prefixed deployment.
    path("", include((oauth2_urls.metadata_urlpatterns, "oauth2_metadata"))),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
]
