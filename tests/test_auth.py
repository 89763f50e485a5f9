"""squall.auth: the login mixins against fake OpenID / OAuth 1.0a / OAuth 2
providers, all served by squall on a loopback port."""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from typing import Any, Optional

import pytest

from squall import auth
from squall.auth import (
    AuthError,
    FacebookGraphMixin,
    GoogleOAuth2Mixin,
    OAuthMixin,
    OpenIdMixin,
    TwitterMixin,
)
from squall.escape import json_decode
from squall.testing import AsyncHTTPTestCase, ExpectLog
from squall.web import Application, HTTPError, RequestHandler

CONSUMER = {"key": "consumer-key", "secret": "consumer secret&1"}
REQUEST_TOKEN = {"key": "req-token", "secret": "req secret"}
ACCESS_TOKEN = {"key": "acc-token", "secret": "acc/secret"}


# -- an OAuth 1.0a provider that checks every signature (RFC 5849) ----------------


def _pct(value: str) -> str:
    return urllib.parse.quote(value.encode("utf-8"), safe="-._~")


def _expected_signature(handler: RequestHandler, token_secret: str) -> str:
    """Recompute the HMAC-SHA1 signature of the request ``handler`` got,
    from the request as received (RFC 5849 3.4.1-3.4.2)."""
    request = handler.request
    pairs = []
    for name, values in request.arguments.items():
        if name == "oauth_signature":
            continue
        for value in values:
            pairs.append((_pct(name), _pct(value.decode("utf-8"))))
    pairs.sort()
    base_uri = f"{request.protocol}://{request.host.lower()}{request.path}"
    base = "&".join(
        [request.method, _pct(base_uri), _pct("&".join(f"{k}={v}" for k, v in pairs))]
    )
    key = f"{_pct(CONSUMER['secret'])}&{_pct(token_secret)}"
    digest = hmac.new(key.encode(), base.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _check_signed(handler: RequestHandler, token_key: Optional[str], token_secret: str) -> None:
    args = {name: handler.get_argument(name) for name in handler.request.arguments}
    if args.get("oauth_consumer_key") != CONSUMER["key"]:
        raise HTTPError(401, "wrong consumer")
    if args.get("oauth_signature_method") != "HMAC-SHA1" or args.get("oauth_version") != "1.0":
        raise HTTPError(401, "wrong method")
    if token_key is not None and args.get("oauth_token") != token_key:
        raise HTTPError(401, "wrong token")
    if not args.get("oauth_nonce") or not args.get("oauth_timestamp", "").isdigit():
        raise HTTPError(401, "no nonce")
    if args.get("oauth_signature") != _expected_signature(handler, token_secret):
        raise HTTPError(401, "bad signature")


class ProviderRequestToken(RequestHandler):
    def get(self) -> None:
        _check_signed(self, None, "")
        self.settings["seen_callback"].append(self.get_argument("oauth_callback", None))
        self.write(urllib.parse.urlencode(
            {"oauth_token": REQUEST_TOKEN["key"], "oauth_token_secret": REQUEST_TOKEN["secret"]}
        ))


class ProviderAuthorize(RequestHandler):
    def get(self) -> None:
        # The user said yes: back to the application with a verifier.
        token = self.get_argument("oauth_token")
        back = self.get_argument("oauth_callback", None) or self.settings["registered_callback"]
        self.redirect(back + "?" + urllib.parse.urlencode({"oauth_token": token, "oauth_verifier": "v3r"}))


class ProviderAccessToken(RequestHandler):
    def get(self) -> None:
        _check_signed(self, REQUEST_TOKEN["key"], REQUEST_TOKEN["secret"])
        if self.get_argument("oauth_verifier") != "v3r":
            raise HTTPError(401, "bad verifier")
        self.write(urllib.parse.urlencode({
            "oauth_token": ACCESS_TOKEN["key"],
            "oauth_token_secret": ACCESS_TOKEN["secret"],
            "screen_name": "ada",
        }))


class ProviderVerifyCredentials(RequestHandler):
    def get(self) -> None:
        _check_signed(self, ACCESS_TOKEN["key"], ACCESS_TOKEN["secret"])
        self.write({"screen_name": "ada", "name": "Ada Lovelace"})


class ProviderStatus(RequestHandler):
    def post(self) -> None:
        _check_signed(self, ACCESS_TOKEN["key"], ACCESS_TOKEN["secret"])
        self.write({"posted": self.get_body_argument("status"), "lang": self.get_query_argument("lang")})


class TwitterLogin(RequestHandler, TwitterMixin):
    def initialize(self, test: AsyncHTTPTestCase, authenticate: bool = False, callback: Optional[str] = None) -> None:  # type: ignore[override]
        self._OAUTH_REQUEST_TOKEN_URL = test.get_url("/provider/request_token")
        self._OAUTH_AUTHORIZE_URL = test.get_url("/provider/authorize")
        self._OAUTH_AUTHENTICATE_URL = test.get_url("/provider/authorize?via=authenticate")
        self._OAUTH_ACCESS_TOKEN_URL = test.get_url("/provider/access_token")
        self._TWITTER_BASE_URL = test.get_url("/provider/api")
        self._authenticate = authenticate
        self._callback = callback

    async def get(self) -> None:
        if self.get_argument("oauth_token", None):
            try:
                user = await self.get_authenticated_user()
            except AuthError as e:
                raise HTTPError(403, str(e))
            self.write(user)
        elif self._authenticate:
            await self.authenticate_redirect()
        else:
            await self.authorize_redirect(callback_uri=self._callback)


class TwitterPost(RequestHandler, TwitterMixin):
    def initialize(self, test: AsyncHTTPTestCase) -> None:  # type: ignore[override]
        self._TWITTER_BASE_URL = test.get_url("/provider/api")

    async def get(self) -> None:
        answer = await self.twitter_request(
            "/statuses/update", access_token=ACCESS_TOKEN, post_args={"status": "héllo & bye"}, lang="en"
        )
        self.write(answer)


def _local(url: str) -> str:
    """The path and query of ``url``, for fetch() on the test server."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


class TwitterTest(AsyncHTTPTestCase):
    def get_app(self) -> Application:
        return Application(
            [
                ("/login", TwitterLogin, dict(test=self, callback="/login")),
                ("/login_registered", TwitterLogin, dict(test=self)),
                ("/login_oob", TwitterLogin, dict(test=self, callback="oob")),
                ("/authenticate", TwitterLogin, dict(test=self, authenticate=True)),
                ("/post", TwitterPost, dict(test=self)),
                ("/provider/request_token", ProviderRequestToken),
                ("/provider/authorize", ProviderAuthorize),
                ("/provider/access_token", ProviderAccessToken),
                ("/provider/api/account/verify_credentials.json", ProviderVerifyCredentials),
                ("/provider/api/statuses/update.json", ProviderStatus),
            ],
            twitter_consumer_key=CONSUMER["key"],
            twitter_consumer_secret=CONSUMER["secret"],
            seen_callback=[],
            registered_callback=self.get_url("/login_registered"),
        )

    def _dance(self, start: str) -> Any:
        first = self.fetch(start, follow_redirects=False)
        assert first.code == 302, first.body
        cookie = first.headers["Set-Cookie"].split(";")[0]
        # The browser goes to the provider, which sends it back.
        at_provider = self.fetch(_local(first.headers["Location"]), follow_redirects=False)
        assert at_provider.code == 302
        back = at_provider.headers["Location"]
        assert back.startswith(self.get_url("/"))
        return self.fetch(_local(back), headers={"Cookie": cookie})

    def test_full_login_with_callback(self) -> None:
        response = self._dance("/login")
        assert response.code == 200, response.body
        user = json_decode(response.body)
        assert user["username"] == "ada" and user["name"] == "Ada Lovelace"
        assert user["access_token"] == {
            "key": ACCESS_TOKEN["key"], "secret": ACCESS_TOKEN["secret"], "screen_name": "ada"
        }
        assert self._app.settings["seen_callback"] == [self.get_url("/login")]
        # The request-token cookie is used up.
        assert response.headers["Set-Cookie"].startswith('_oauth_request_token=""; expires=')

    def test_login_with_registered_callback(self) -> None:
        response = self._dance("/login_registered")
        assert response.code == 200, response.body
        assert self._app.settings["seen_callback"] == [None]

    def test_authenticate_redirect(self) -> None:
        first = self.fetch("/authenticate", follow_redirects=False)
        assert first.code == 302
        assert "via=authenticate" in first.headers["Location"]
        assert "oauth_token=req-token" in first.headers["Location"]

    def test_out_of_band_callback_answers_with_the_url(self) -> None:
        response = self.fetch("/login_oob", follow_redirects=False)
        assert response.code == 200
        assert response.body.decode().startswith(self.get_url("/provider/authorize?oauth_token=req-token"))
        assert self._app.settings["seen_callback"] == ["oob"]

    def test_missing_or_forged_cookie_is_refused(self) -> None:
        with ExpectLog("squall.access", "403", required=False):
            response = self.fetch("/login?oauth_token=req-token&oauth_verifier=v3r")
        assert response.code == 403
        forged = base64.b64encode(b"other").decode() + "|" + base64.b64encode(b"x").decode()
        with ExpectLog("squall.access", "403", required=False):
            response = self.fetch(
                "/login?oauth_token=req-token&oauth_verifier=v3r",
                headers={"Cookie": f"_oauth_request_token={forged}"},
            )
        assert response.code == 403

    def test_signed_post(self) -> None:
        response = self.fetch("/post")
        assert response.code == 200, response.body
        assert json_decode(response.body) == {"posted": "héllo & bye", "lang": "en"}


def test_signature_matches_rfc5849_example() -> None:
    # RFC 5849 section 1.2: the photos.example.net request.
    parameters = {
        "file": "vacation.jpg",
        "size": "original",
        "oauth_consumer_key": "dpf43f3p2l4k3l03",
        "oauth_token": "nnch734d00sl2jdk",
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": "137131202",
        "oauth_nonce": "chapoH",
    }
    signature = auth._oauth10a_signature(
        {"key": "dpf43f3p2l4k3l03", "secret": "kd94hf93k423kf44"},
        "GET",
        "http://photos.example.net:80/photos",
        parameters,
        {"key": "nnch734d00sl2jdk", "secret": "pfkkdhi9sl3r4s00"},
    )
    assert signature == "MdpQcU8iPSUjWoN/UDMsK2sui9I="


class NoCallbacks(OAuthMixin):
    _OAUTH_NO_CALLBACKS = True


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_callback_refused_when_provider_takes_none() -> None:
    with pytest.raises(ValueError, match="'/back'"):
        coroutine = NoCallbacks().authorize_redirect(callback_uri="/back")
        coroutine.send(None)


# -- OAuth 2: Google and Facebook ---------------------------------------------------


class GoogleAuthorize(RequestHandler):
    def get(self) -> None:
        assert self.get_argument("response_type") == "code"
        assert self.get_argument("client_id") == "g-id"
        assert self.get_argument("scope") == "profile email"
        assert self.get_argument("prompt") == "consent"
        self.redirect(self.get_argument("redirect_uri") + "?code=g-code")


class GoogleToken(RequestHandler):
    def post(self) -> None:
        assert self.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        form = {name: self.get_body_argument(name) for name in self.request.body_arguments}
        expected = {
            "code": "g-code",
            "client_id": "g-id",
            "client_secret": "g-secret",
            "grant_type": "authorization_code",
            "redirect_uri": self.settings["redirect_uri"],
        }
        if form != expected:
            raise HTTPError(400)
        self.write({"access_token": "g-token", "expires_in": 3599})


class GoogleUserinfo(RequestHandler):
    def get(self) -> None:
        if self.get_argument("access_token") != "g-token":
            raise HTTPError(401)
        self.write({"name": "Grace", "email": "grace@example.com"})


class GoogleLogin(RequestHandler, GoogleOAuth2Mixin):
    def initialize(self, test: AsyncHTTPTestCase) -> None:  # type: ignore[override]
        self._OAUTH_AUTHORIZE_URL = test.get_url("/google/authorize")
        self._OAUTH_ACCESS_TOKEN_URL = test.get_url("/google/token")
        self._OAUTH_USERINFO_URL = test.get_url("/google/userinfo")

    async def get(self) -> None:
        redirect_uri = self.settings["redirect_uri"]
        code = self.get_argument("code", None)
        if code is None:
            self.authorize_redirect(
                redirect_uri=redirect_uri,
                client_id=self.get_google_oauth_settings()["key"],
                scope=["profile", "email"],
                extra_params={"prompt": "consent"},
            )
            return
        access = await self.get_authenticated_user(redirect_uri=redirect_uri, code=code)
        user = await self.oauth2_request(self._OAUTH_USERINFO_URL, access_token=access["access_token"])
        user["token"] = access["access_token"]
        self.write(user)


class FacebookToken(RequestHandler):
    def get(self) -> None:
        assert self.get_argument("code") == "fb-code"
        assert self.get_argument("client_secret") == "fb-secret"
        self.write({"access_token": "fb-token", "expires_in": 5183944})


class FacebookMe(RequestHandler):
    def get(self) -> None:
        proof = hmac.new(b"fb-secret", b"fb-token", hashlib.sha256).hexdigest()
        if self.get_argument("appsecret_proof") != proof or self.get_argument("access_token") != "fb-token":
            raise HTTPError(401)
        fields = set(self.get_argument("fields").split(","))
        assert {"id", "name", "picture", "email"} <= fields
        self.write({"id": "42", "name": "Fran", "email": "fran@example.com", "unasked": "x"})


class FacebookLogin(RequestHandler, FacebookGraphMixin):
    def initialize(self, test: AsyncHTTPTestCase) -> None:  # type: ignore[override]
        self._OAUTH_AUTHORIZE_URL = test.get_url("/fb/authorize?")
        self._OAUTH_ACCESS_TOKEN_URL = test.get_url("/fb/access_token")
        self._FACEBOOK_BASE_URL = test.get_url("/fb/graph")

    async def get(self) -> None:
        if self.get_argument("code", None):
            user = await self.get_authenticated_user(
                redirect_uri=self.request.full_url(),
                client_id="fb-id",
                client_secret="fb-secret",
                code=self.get_argument("code"),
                extra_fields={"email"},
            )
            self.write(user)
        else:
            self.authorize_redirect(redirect_uri=self.request.full_url(), client_id="fb-id")


class OAuth2Test(AsyncHTTPTestCase):
    def get_app(self) -> Application:
        return Application(
            [
                ("/google/login", GoogleLogin, dict(test=self)),
                ("/google/authorize", GoogleAuthorize),
                ("/google/token", GoogleToken),
                ("/google/userinfo", GoogleUserinfo),
                ("/fb/login", FacebookLogin, dict(test=self)),
                ("/fb/access_token", FacebookToken),
                ("/fb/graph/me", FacebookMe),
            ],
            google_oauth={"key": "g-id", "secret": "g-secret"},
            redirect_uri=self.get_url("/google/login"),
        )

    def test_google_login_follows_the_redirects(self) -> None:
        response = self.fetch("/google/login")
        assert response.code == 200, response.body
        assert json_decode(response.body) == {"name": "Grace", "email": "grace@example.com", "token": "g-token"}

    def test_facebook_login(self) -> None:
        first = self.fetch("/fb/login", follow_redirects=False)
        assert first.code == 302
        location = urllib.parse.urlsplit(first.headers["Location"])
        assert location.path == "/fb/authorize"
        query = urllib.parse.parse_qs(location.query)
        assert query["client_id"] == ["fb-id"] and query["response_type"] == ["code"]
        assert query["redirect_uri"] == [self.get_url("/fb/login")]

        response = self.fetch("/fb/login?code=fb-code")
        assert response.code == 200, response.body
        user = json_decode(response.body)
        assert user["id"] == "42" and user["email"] == "fran@example.com"
        assert user["picture"] is None and "unasked" not in user
        assert user["access_token"] == "fb-token"
        assert user["session_expires"] == "5183944"


# -- OpenID 2.0 ---------------------------------------------------------------------


class OpenIdEndpoint(RequestHandler):
    def post(self) -> None:
        assert self.get_argument("openid.mode") == "check_authentication"
        valid = self.get_argument("openid.sig") == "good"
        self.write(f"ns:http://specs.openid.net/auth/2.0\nis_valid:{'true' if valid else 'false'}\n")


class OpenIdLogin(RequestHandler, OpenIdMixin):
    def initialize(self, test: AsyncHTTPTestCase) -> None:  # type: ignore[override]
        self._OPENID_ENDPOINT = test.get_url("/openid/endpoint")

    async def get(self) -> None:
        if self.get_argument("openid.mode", None):
            try:
                user = await self.get_authenticated_user()
            except AuthError:
                raise HTTPError(403)
            self.write(user)
        else:
            self.authenticate_redirect(ax_attrs=["name", "email"])


class OpenIdTest(AsyncHTTPTestCase):
    def get_app(self) -> Application:
        return Application(
            [("/openid/login", OpenIdLogin, dict(test=self)), ("/openid/endpoint", OpenIdEndpoint)]
        )

    @pytest.mark.filterwarnings("ignore:OpenIdMixin is deprecated:DeprecationWarning")
    def test_redirect_asks_for_attributes(self) -> None:
        response = self.fetch("/openid/login", follow_redirects=False)
        assert response.code == 302
        location = urllib.parse.urlsplit(response.headers["Location"])
        assert location.path == "/openid/endpoint"
        query = dict(urllib.parse.parse_qsl(location.query))
        assert query["openid.mode"] == "checkid_setup"
        assert query["openid.return_to"] == self.get_url("/openid/login")
        assert query["openid.realm"] == self.get_url("/")
        assert query["openid.ax.required"] == "firstname,fullname,lastname,email"
        assert query["openid.ax.type.email"] == "http://axschema.org/contact/email"

    @pytest.mark.filterwarnings("ignore:OpenIdMixin is deprecated:DeprecationWarning")
    def test_verified_user_with_provider_chosen_alias(self) -> None:
        query = urllib.parse.urlencode({
            "openid.mode": "id_res",
            "openid.sig": "good",
            "openid.claimed_id": "https://id.example/ada",
            "openid.ns.ext1": "http://openid.net/srv/ax/1.0",
            "openid.ext1.type.f": "http://axschema.org/namePerson/first",
            "openid.ext1.value.f": "Ada",
            "openid.ext1.type.l": "http://axschema.org/namePerson/last",
            "openid.ext1.value.l": "Lovelace",
            "openid.ext1.type.m": "http://axschema.org/contact/email",
            "openid.ext1.value.m": "ada@example.com",
        })
        response = self.fetch("/openid/login?" + query)
        assert response.code == 200, response.body
        assert json_decode(response.body) == {
            "name": "Ada Lovelace",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
            "claimed_id": "https://id.example/ada",
        }

    @pytest.mark.filterwarnings("ignore:OpenIdMixin is deprecated:DeprecationWarning")
    def test_unconfirmed_login_is_refused(self) -> None:
        with ExpectLog("squall.access", "403", required=False):
            response = self.fetch("/openid/login?openid.mode=id_res&openid.sig=forged")
        assert response.code == 403


def test_openid_mixin_is_deprecated() -> None:
    with pytest.warns(DeprecationWarning, match="OpenIdMixin is deprecated"):
        OpenIdMixin()
