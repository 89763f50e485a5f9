"""Third-party login for request handlers: OpenID 2.0, OAuth 1.0/1.0a and
OAuth 2.0, with ready-made Google, Facebook and Twitter (X) mixins.

Each mixin is combined with a `.web.RequestHandler`. A login handler
usually serves both legs of the dance: the first visit redirects the user
to the provider, and the provider sends the user back to the same URL with
a code or token that the mixin exchanges for the user's details::

    class GoogleLoginHandler(squall.web.RequestHandler, squall.auth.GoogleOAuth2Mixin):
        async def get(self):
            redirect_uri = "https://example.com/auth/google"
            if self.get_argument("code", None):
                access = await self.get_authenticated_user(
                    redirect_uri=redirect_uri, code=self.get_argument("code"))
                user = await self.oauth2_request(
                    "https://www.googleapis.com/oauth2/v1/userinfo",
                    access_token=access["access_token"])
                ...  # look the user up, set a signed cookie
            else:
                self.authorize_redirect(
                    redirect_uri=redirect_uri,
                    client_id=self.settings["google_oauth"]["key"],
                    scope=["profile", "email"])

The provider's endpoints are class attributes (``_OAUTH_AUTHORIZE_URL``,
``_OAUTH_ACCESS_TOKEN_URL``, ...), so a subclass can point a mixin at
another provider, or at a local fake one in tests. Calls to the provider go
through `get_auth_http_client`, squall's `.httpclient.AsyncHTTPClient`
unless overridden; an error answer from the provider raises
`.httpclient.HTTPClientError`, and a malformed or refused exchange raises
`AuthError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import urllib.parse
import uuid
import warnings
from typing import Any, Optional, Union, cast

from squall import escape
from squall.httpclient import AsyncHTTPClient, HTTPResponse
from squall.httputil import url_concat
from squall.web import RequestHandler

__all__ = [
    "AuthError",
    "FacebookGraphMixin",
    "GoogleOAuth2Mixin",
    "OAuth2Mixin",
    "OAuthMixin",
    "OpenIdMixin",
    "TwitterMixin",
]

# OpenID 2.0 (openid.net/specs/openid-authentication-2_0.html) and its
# Attribute Exchange and OAuth extensions: fixed namespace URIs.
_OPENID_NS = "http://specs.openid.net/auth/2.0"
_OPENID_IDENTIFIER_SELECT = "http://specs.openid.net/auth/2.0/identifier_select"
_OPENID_AX_NS = "http://openid.net/srv/ax/1.0"
_OPENID_OAUTH_NS = "http://specs.openid.net/extensions/oauth/1.0"
# Attribute Exchange type URIs (axschema.org) for the attributes we ask for.
_AX_TYPES = {
    "email": "http://axschema.org/contact/email",
    "language": "http://axschema.org/pref/language",
    "username": "http://axschema.org/namePerson/friendly",
    "firstname": "http://axschema.org/namePerson/first",
    "fullname": "http://axschema.org/namePerson",
    "lastname": "http://axschema.org/namePerson/last",
}
# Asking for "name" asks for these three.
_AX_NAME_PARTS = ("firstname", "fullname", "lastname")

# The cookie holding an OAuth 1 request token between the two legs.
_REQUEST_TOKEN_COOKIE = "_oauth_request_token"


class AuthError(Exception):
    """The provider refused the login or answered something we cannot use."""


def _handler(mixin: object) -> RequestHandler:
    """The mixin's object, seen as the request handler it is mixed into."""
    return cast(RequestHandler, mixin)


class OpenIdMixin:
    """Login with OpenID 2.0 and its Attribute Exchange extension.

    Deprecated: the large OpenID 2.0 providers have shut down; use an
    OAuth 2 mixin. Set ``_OPENID_ENDPOINT`` to the provider's endpoint.
    """

    _OPENID_ENDPOINT: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            "OpenIdMixin is deprecated: OpenID 2.0 providers have shut down; use OAuth2Mixin",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)

    def authenticate_redirect(
        self,
        callback_uri: Optional[str] = None,
        ax_attrs: list[str] = ["name", "email", "language", "username"],  # noqa: B006 (Tornado's default)
    ) -> None:
        """Redirect to the provider to log in; it sends the user back to
        ``callback_uri`` (by default this request's URL).

        ``ax_attrs`` names the attributes to ask for: any of ``name``,
        ``email``, ``language`` and ``username``. Returns None (it used to
        return an awaitable; nothing needs awaiting).
        """
        handler = _handler(self)
        callback_uri = callback_uri or handler.request.uri
        args = self._openid_args(callback_uri, ax_attrs=ax_attrs)
        handler.redirect(url_concat(self._OPENID_ENDPOINT, args))

    async def get_authenticated_user(
        self, http_client: Optional[AsyncHTTPClient] = None
    ) -> dict[str, Any]:
        """On the return leg, have the provider confirm the login and return
        the user: ``name``, ``first_name``, ``last_name``, ``email``,
        ``locale``, ``username`` and ``claimed_id``, those the provider gave.

        Raises `AuthError` if the provider does not confirm it.
        """
        handler = _handler(self)
        # Send back everything the provider signed, asking it to check it.
        args = {name: values[-1] for name, values in handler.request.arguments.items()}
        args["openid.mode"] = b"check_authentication"
        client = http_client or self.get_auth_http_client()
        response = await client.fetch(
            self._OPENID_ENDPOINT, method="POST", body=urllib.parse.urlencode(args)
        )
        return self._on_authentication_verified(response)

    def get_auth_http_client(self) -> AsyncHTTPClient:
        """The HTTP client used to talk to the provider; override to use
        another."""
        return AsyncHTTPClient()

    def _openid_args(
        self,
        callback_uri: str,
        ax_attrs: Union[list[str], tuple[str, ...]] = (),
        oauth_scope: Optional[str] = None,
    ) -> dict[str, str]:
        handler = _handler(self)
        return_to = urllib.parse.urljoin(handler.request.full_url(), callback_uri)
        args = {
            "openid.ns": _OPENID_NS,
            "openid.claimed_id": _OPENID_IDENTIFIER_SELECT,
            "openid.identity": _OPENID_IDENTIFIER_SELECT,
            "openid.return_to": return_to,
            "openid.realm": urllib.parse.urljoin(return_to, "/"),
            "openid.mode": "checkid_setup",
        }
        if ax_attrs:
            wanted: list[str] = []
            for attr in ax_attrs:
                if attr == "name":
                    wanted.extend(_AX_NAME_PARTS)
                elif attr in _AX_TYPES:
                    wanted.append(attr)
                else:
                    raise ValueError(f"unknown OpenID attribute {attr!r}")
            args["openid.ns.ax"] = _OPENID_AX_NS
            args["openid.ax.mode"] = "fetch_request"
            for attr in wanted:
                args["openid.ax.type." + attr] = _AX_TYPES[attr]
            args["openid.ax.required"] = ",".join(wanted)
        if oauth_scope:
            args["openid.ns.oauth"] = _OPENID_OAUTH_NS
            args["openid.oauth.consumer"] = handler.request.host.split(":")[0]
            args["openid.oauth.scope"] = oauth_scope
        return args

    def _on_authentication_verified(self, response: HTTPResponse) -> dict[str, Any]:
        # The answer is in key-value form: "key:value" lines (OpenID 2.0 §4.1.1).
        lines = response.body.split(b"\n")
        if b"is_valid:true" not in (line.rstrip(b"\r") for line in lines):
            raise AuthError(f"Invalid OpenID response: {response.body!r}")
        handler = _handler(self)
        arguments = handler.request.arguments

        def argument(name: str) -> str:
            values = arguments.get(name)
            return escape.to_unicode(values[-1]) if values else ""

        # The provider picks the alias of the AX namespace: find it.
        ax_alias = ""
        for name in arguments:
            if name.startswith("openid.ns.") and argument(name) == _OPENID_AX_NS:
                ax_alias = name[len("openid.ns."):]
                break

        def ax_value(attr: str) -> str:
            if not ax_alias:
                return ""
            type_prefix = f"openid.{ax_alias}.type."
            for name in arguments:
                if name.startswith(type_prefix) and argument(name) == _AX_TYPES[attr]:
                    return argument(f"openid.{ax_alias}.value.{name[len(type_prefix):]}")
            return ""

        email = ax_value("email")
        first_name = ax_value("firstname")
        last_name = ax_value("lastname")
        name = ax_value("fullname")
        username = ax_value("username")
        locale = ax_value("language").lower()
        if not name:
            if first_name or last_name:
                name = " ".join(part for part in (first_name, last_name) if part)
            elif email:
                name = email.split("@")[0]
        user: dict[str, Any] = {}
        for key, value in (
            ("name", name),
            ("first_name", first_name),
            ("last_name", last_name),
            ("email", email),
            ("locale", locale),
            ("username", username),
            ("claimed_id", argument("openid.claimed_id")),
        ):
            if value:
                user[key] = value
        return user


class OAuthMixin:
    """Login with OAuth 1.0a (RFC 5849), or the original OAuth 1.0.

    Subclasses set ``_OAUTH_REQUEST_TOKEN_URL``, ``_OAUTH_ACCESS_TOKEN_URL``
    and ``_OAUTH_AUTHORIZE_URL`` (``_OAUTH_VERSION = "1.0"`` for providers
    of the old protocol; ``_OAUTH_NO_CALLBACKS = True`` for those that take
    no ``oauth_callback``), and implement `_oauth_consumer_token` and
    `_oauth_get_user_future`.

    Between the two legs the request token is kept in the
    ``_oauth_request_token`` cookie.
    """

    _OAUTH_REQUEST_TOKEN_URL: str
    _OAUTH_ACCESS_TOKEN_URL: str
    _OAUTH_AUTHORIZE_URL: str
    _OAUTH_VERSION = "1.0a"
    _OAUTH_NO_CALLBACKS = False

    async def authorize_redirect(
        self,
        callback_uri: Optional[str] = None,
        extra_params: Optional[dict[str, Any]] = None,
        http_client: Optional[AsyncHTTPClient] = None,
    ) -> None:
        """Get a request token from the provider and redirect the user to
        authorize it.

        The provider sends the user back to ``callback_uri`` (relative to
        this request's URL), or to the URL registered with it if None. With
        ``callback_uri="oob"`` the response is the authorization URL itself
        (for clients that cannot receive a redirect). ``extra_params`` go
        into the request-token call (OAuth 1.0a only). Must be awaited.
        """
        if callback_uri and self._OAUTH_NO_CALLBACKS:
            raise ValueError(
                f"{type(self).__name__} does not support oauth_callback, got {callback_uri!r}"
            )
        client = http_client or self.get_auth_http_client()
        if self._OAUTH_VERSION == "1.0a":
            url = self._oauth_request_token_url(callback_uri=callback_uri, extra_params=extra_params)
        else:
            url = self._oauth_request_token_url()
        response = await client.fetch(url)
        self._on_request_token(self._OAUTH_AUTHORIZE_URL, callback_uri, response)

    async def get_authenticated_user(
        self, http_client: Optional[AsyncHTTPClient] = None
    ) -> dict[str, Any]:
        """On the return leg, trade the authorized request token for an
        access token and return the user from `_oauth_get_user_future`,
        with the access token (a dict with ``key``, ``secret`` and whatever
        else the provider sent) under ``"access_token"``.

        Raises `AuthError` if the request-token cookie is missing or does
        not match, or if no user comes back.
        """
        handler = _handler(self)
        request_key = handler.get_argument("oauth_token")
        verifier = handler.get_argument("oauth_verifier", None)
        cookie = handler.get_cookie(_REQUEST_TOKEN_COOKIE)
        if not cookie:
            raise AuthError("Missing OAuth request token cookie")
        handler.clear_cookie(_REQUEST_TOKEN_COOKIE)
        parts = cookie.split("|")
        if len(parts) != 2:
            raise AuthError(f"Malformed OAuth request token cookie {cookie!r}")
        try:
            cookie_key, cookie_secret = (base64.b64decode(part, validate=True) for part in parts)
        except binascii.Error:
            raise AuthError(f"Malformed OAuth request token cookie {cookie!r}") from None
        if not hmac.compare_digest(cookie_key, escape.utf8(request_key)):
            raise AuthError("Request token does not match cookie")
        token: dict[str, Any] = {"key": cookie_key, "secret": cookie_secret}
        if verifier:
            token["verifier"] = verifier
        client = http_client or self.get_auth_http_client()
        response = await client.fetch(self._oauth_access_token_url(token))
        access_token = _oauth_parse_response(response.body)
        user = await self._oauth_get_user_future(access_token)
        if not user:
            raise AuthError("Error getting user")
        user["access_token"] = access_token
        return user

    def get_auth_http_client(self) -> AsyncHTTPClient:
        """The HTTP client used to talk to the provider; override to use
        another."""
        return AsyncHTTPClient()

    def _oauth_consumer_token(self) -> dict[str, Any]:
        """This application's consumer credentials: a dict with ``key`` and
        ``secret``. Subclasses must implement it."""
        raise NotImplementedError()

    async def _oauth_get_user_future(self, access_token: dict[str, Any]) -> dict[str, Any]:
        """Look up the user the access token belongs to (usually with a
        signed API call). Subclasses must implement it."""
        raise NotImplementedError()

    def _oauth_request_token_url(
        self, callback_uri: Optional[str] = None, extra_params: Optional[dict[str, Any]] = None
    ) -> str:
        consumer_token = self._oauth_consumer_token()
        url = self._OAUTH_REQUEST_TOKEN_URL
        args = _oauth_base_args(consumer_token)
        if self._OAUTH_VERSION == "1.0a":
            if callback_uri == "oob":
                args["oauth_callback"] = "oob"
            elif callback_uri:
                args["oauth_callback"] = urllib.parse.urljoin(
                    _handler(self).request.full_url(), callback_uri
                )
            if extra_params:
                args.update(extra_params)
        args["oauth_signature"] = self._sign(consumer_token, "GET", url, args)
        return url + "?" + urllib.parse.urlencode(args)

    def _on_request_token(
        self, authorize_url: str, callback_uri: Optional[str], response: HTTPResponse
    ) -> None:
        handler = _handler(self)
        request_token = _oauth_parse_response(response.body)
        data = (
            base64.b64encode(escape.utf8(request_token["key"]))
            + b"|"
            + base64.b64encode(escape.utf8(request_token["secret"]))
        )
        handler.set_cookie(_REQUEST_TOKEN_COOKIE, data)
        args = {"oauth_token": request_token["key"]}
        if callback_uri == "oob":
            handler.finish(authorize_url + "?" + urllib.parse.urlencode(args))
            return
        if callback_uri:
            args["oauth_callback"] = urllib.parse.urljoin(handler.request.full_url(), callback_uri)
        handler.redirect(authorize_url + "?" + urllib.parse.urlencode(args))

    def _oauth_access_token_url(self, request_token: dict[str, Any]) -> str:
        consumer_token = self._oauth_consumer_token()
        url = self._OAUTH_ACCESS_TOKEN_URL
        args = _oauth_base_args(consumer_token)
        args["oauth_token"] = escape.to_unicode(request_token["key"])
        if "verifier" in request_token:
            args["oauth_verifier"] = request_token["verifier"]
        args["oauth_signature"] = self._sign(consumer_token, "GET", url, args, request_token)
        return url + "?" + urllib.parse.urlencode(args)

    def _oauth_request_parameters(
        self,
        url: str,
        access_token: dict[str, Any],
        parameters: dict[str, Any] = {},  # noqa: B006 (Tornado's default; never mutated)
        method: str = "GET",
    ) -> dict[str, Any]:
        """The ``oauth_*`` parameters that sign a call to ``url`` made with
        ``access_token`` and carrying ``parameters`` (query and form
        arguments, which the signature covers)."""
        consumer_token = self._oauth_consumer_token()
        base_args = _oauth_base_args(consumer_token)
        base_args["oauth_token"] = escape.to_unicode(access_token["key"])
        signed = dict(base_args)
        signed.update(parameters)
        base_args["oauth_signature"] = self._sign(consumer_token, method, url, signed, access_token)
        return base_args

    def _sign(
        self,
        consumer_token: dict[str, Any],
        method: str,
        url: str,
        parameters: dict[str, Any],
        token: Optional[dict[str, Any]] = None,
    ) -> str:
        if self._OAUTH_VERSION == "1.0a":
            return _oauth10a_signature(consumer_token, method, url, parameters, token)
        return _oauth_signature(consumer_token, method, url, parameters, token)


class OAuth2Mixin:
    """Login with OAuth 2.0 (RFC 6749), authorization-code flow.

    Subclasses set ``_OAUTH_AUTHORIZE_URL`` and ``_OAUTH_ACCESS_TOKEN_URL``
    and add a ``get_authenticated_user`` that trades the code for a token
    (see `GoogleOAuth2Mixin` and `FacebookGraphMixin`).
    """

    _OAUTH_AUTHORIZE_URL: str
    _OAUTH_ACCESS_TOKEN_URL: str

    def authorize_redirect(
        self,
        redirect_uri: Optional[str] = None,
        client_id: Optional[str] = None,
        client_secret: Optional[str] = None,
        extra_params: Optional[dict[str, Any]] = None,
        scope: Optional[list[str]] = None,
        response_type: str = "code",
    ) -> None:
        """Redirect the user to the provider to authorize this application.

        The provider sends the user back to ``redirect_uri`` with a ``code``
        argument. ``scope`` is a list of scope names; ``extra_params`` are
        added to the authorization URL. ``client_secret`` is accepted for
        compatibility and not sent (the secret never goes through the
        browser). Returns None.
        """
        args: dict[str, Any] = {"response_type": response_type}
        if redirect_uri is not None:
            args["redirect_uri"] = redirect_uri
        if client_id is not None:
            args["client_id"] = client_id
        if extra_params:
            args.update(extra_params)
        if scope:
            args["scope"] = " ".join(scope)
        _handler(self).redirect(url_concat(self._OAUTH_AUTHORIZE_URL, args))

    async def oauth2_request(
        self,
        url: str,
        access_token: Optional[str] = None,
        post_args: Optional[dict[str, Any]] = None,
        **args: Any,
    ) -> Any:
        """Call an API at ``url`` with ``access_token`` and return its
        decoded JSON answer.

        ``args`` become query arguments; with ``post_args`` (a dict, even an
        empty one) the call is a form-encoded POST. An error status raises
        `.httpclient.HTTPClientError`.
        """
        query: dict[str, Any] = {}
        if access_token:
            query["access_token"] = access_token
        query.update(args)
        if query:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(query)
        client = self.get_auth_http_client()
        if post_args is not None:
            response = await client.fetch(url, method="POST", body=urllib.parse.urlencode(post_args))
        else:
            response = await client.fetch(url)
        return escape.json_decode(response.body)

    def get_auth_http_client(self) -> AsyncHTTPClient:
        """The HTTP client used to talk to the provider; override to use
        another."""
        return AsyncHTTPClient()

    def _oauth_request_token_url(
        self,
        redirect_uri: Optional[str] = None,
        client_id: Optional[str] = None,
        client_secret: Optional[str] = None,
        code: Optional[str] = None,
        extra_params: Optional[dict[str, Any]] = None,
    ) -> str:
        args: dict[str, Any] = {}
        for key, value in (
            ("redirect_uri", redirect_uri),
            ("code", code),
            ("client_id", client_id),
            ("client_secret", client_secret),
        ):
            if value is not None:
                args[key] = value
        if extra_params:
            args.update(extra_params)
        return url_concat(self._OAUTH_ACCESS_TOKEN_URL, args)


class GoogleOAuth2Mixin(OAuth2Mixin):
    """Login with Google (OAuth 2.0).

    Register the application with Google to get a client id and secret, and
    put them in the application setting ``google_oauth`` as
    ``{"key": CLIENT_ID, "secret": CLIENT_SECRET}``. After
    `get_authenticated_user`, fetch the user's profile with `oauth2_request`
    from ``_OAUTH_USERINFO_URL``.
    """

    _OAUTH_AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"
    _OAUTH_ACCESS_TOKEN_URL = "https://www.googleapis.com/oauth2/v4/token"
    _OAUTH_USERINFO_URL = "https://www.googleapis.com/oauth2/v1/userinfo"
    _OAUTH_NO_CALLBACKS = False
    _OAUTH_SETTINGS_KEY = "google_oauth"

    def get_google_oauth_settings(self) -> dict[str, str]:
        """The ``{"key": ..., "secret": ...}`` credentials; by default the
        ``google_oauth`` application setting. Override to look them up
        elsewhere."""
        return _handler(self).settings[self._OAUTH_SETTINGS_KEY]

    async def get_authenticated_user(
        self,
        redirect_uri: str,
        code: str,
        client_id: Optional[str] = None,
        client_secret: Optional[str] = None,
    ) -> dict[str, Any]:
        """Trade the authorization ``code`` for tokens; returns Google's
        answer (``access_token``, ``expires_in``, ``id_token``, ...).

        ``client_id`` and ``client_secret`` default to those of
        `get_google_oauth_settings`.
        """
        if client_id is None or client_secret is None:
            credentials = self.get_google_oauth_settings()
            if client_id is None:
                client_id = credentials["key"]
            if client_secret is None:
                client_secret = credentials["secret"]
        body = urllib.parse.urlencode(
            {
                "redirect_uri": redirect_uri,
                "code": code,
                "client_id": client_id,
                "client_secret": client_secret,
                "grant_type": "authorization_code",
            }
        )
        response = await self.get_auth_http_client().fetch(
            self._OAUTH_ACCESS_TOKEN_URL,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=body,
        )
        return escape.json_decode(response.body)


class FacebookGraphMixin(OAuth2Mixin):
    """Login with Facebook (OAuth 2.0), and calls to its Graph API."""

    _OAUTH_ACCESS_TOKEN_URL = "https://graph.facebook.com/oauth/access_token"
    _OAUTH_AUTHORIZE_URL = "https://www.facebook.com/dialog/oauth?"
    _OAUTH_NO_CALLBACKS = False
    _FACEBOOK_BASE_URL = "https://graph.facebook.com"

    async def get_authenticated_user(
        self,
        redirect_uri: str,
        client_id: str,
        client_secret: str,
        code: str,
        extra_fields: Optional[set[str]] = None,
    ) -> Optional[dict[str, Any]]:
        """Trade the authorization ``code`` for an access token and return
        the user: the fields ``id``, ``name``, ``first_name``,
        ``last_name``, ``locale``, ``picture`` and ``link`` (plus
        ``extra_fields``), with ``access_token`` and ``session_expires``
        (seconds, as a string)."""
        response = await self.get_auth_http_client().fetch(
            self._oauth_request_token_url(
                redirect_uri=redirect_uri, client_id=client_id, client_secret=client_secret, code=code
            )
        )
        answer = escape.json_decode(response.body)
        access_token = answer.get("access_token")
        if not access_token:
            raise AuthError(f"Facebook gave no access token: {answer!r}")
        fields = {"id", "name", "first_name", "last_name", "locale", "picture", "link"}
        if extra_fields:
            fields.update(extra_fields)
        # Graph API calls made with a server's token should prove it knows
        # the app secret (Facebook's appsecret_proof).
        proof = hmac.new(
            escape.utf8(client_secret), escape.utf8(access_token), hashlib.sha256
        ).hexdigest()
        user = await self.facebook_request(
            path="/me",
            access_token=access_token,
            appsecret_proof=proof,
            fields=",".join(sorted(fields)),
        )
        if user is None:
            return None
        result = {field: user.get(field) for field in fields}
        result["access_token"] = access_token
        result["session_expires"] = str(answer.get("expires_in"))
        return result

    async def facebook_request(
        self,
        path: str,
        access_token: Optional[str] = None,
        post_args: Optional[dict[str, Any]] = None,
        **args: Any,
    ) -> Any:
        """Call the Graph API at ``path`` (e.g. ``"/me/feed"``) and return
        its decoded JSON answer; with ``post_args`` it is a POST."""
        return await self.oauth2_request(
            self._FACEBOOK_BASE_URL + path, access_token=access_token, post_args=post_args, **args
        )


class TwitterMixin(OAuthMixin):
    """Login with Twitter (X) (OAuth 1.0a), and signed calls to its API.

    Put the application's consumer key and secret in the application
    settings ``twitter_consumer_key`` and ``twitter_consumer_secret``. The
    user returned by ``get_authenticated_user`` is the
    ``account/verify_credentials`` answer, with ``username`` set to the
    screen name.
    """

    _OAUTH_REQUEST_TOKEN_URL = "https://api.twitter.com/oauth/request_token"
    _OAUTH_ACCESS_TOKEN_URL = "https://api.twitter.com/oauth/access_token"
    _OAUTH_AUTHORIZE_URL = "https://api.twitter.com/oauth/authorize"
    _OAUTH_AUTHENTICATE_URL = "https://api.twitter.com/oauth/authenticate"
    _OAUTH_NO_CALLBACKS = False
    _TWITTER_BASE_URL = "https://api.twitter.com/1.1"

    async def authenticate_redirect(self, callback_uri: Optional[str] = None) -> None:
        """Like ``authorize_redirect``, through Twitter's "Sign in with
        Twitter" page, which skips the question for a user who already
        authorized this application. Must be awaited."""
        response = await self.get_auth_http_client().fetch(
            self._oauth_request_token_url(callback_uri=callback_uri)
        )
        self._on_request_token(self._OAUTH_AUTHENTICATE_URL, None, response)

    async def twitter_request(
        self,
        path: str,
        access_token: dict[str, Any],
        post_args: Optional[dict[str, Any]] = None,
        **args: Any,
    ) -> Any:
        """Call the API at ``path`` (e.g. ``"/statuses/user_timeline/btaylor"``;
        ``.json`` is added; a full URL is used as it is), signed with
        ``access_token``, and return its decoded JSON answer. ``args`` are
        query arguments; with ``post_args`` the call is a POST."""
        if path.startswith(("http:", "https:")):
            url = path
        else:
            url = self._TWITTER_BASE_URL + path + ".json"
        if access_token:
            signed: dict[str, Any] = dict(args)
            signed.update(post_args or {})
            method = "POST" if post_args is not None else "GET"
            args.update(self._oauth_request_parameters(url, access_token, signed, method=method))
        if args:
            url += "?" + urllib.parse.urlencode(args)
        client = self.get_auth_http_client()
        if post_args is not None:
            response = await client.fetch(url, method="POST", body=urllib.parse.urlencode(post_args))
        else:
            response = await client.fetch(url)
        return escape.json_decode(response.body)

    def _oauth_consumer_token(self) -> dict[str, Any]:
        handler = _handler(self)
        handler.require_setting("twitter_consumer_key", "Twitter OAuth")
        handler.require_setting("twitter_consumer_secret", "Twitter OAuth")
        return {
            "key": handler.settings["twitter_consumer_key"],
            "secret": handler.settings["twitter_consumer_secret"],
        }

    async def _oauth_get_user_future(self, access_token: dict[str, Any]) -> dict[str, Any]:
        user = await self.twitter_request("/account/verify_credentials", access_token=access_token)
        if user:
            user["username"] = user["screen_name"]
        return user


def _oauth_base_args(consumer_token: dict[str, Any]) -> dict[str, Any]:
    """The protocol parameters every OAuth 1 request carries (RFC 5849 3.1)."""
    return {
        "oauth_consumer_key": escape.to_unicode(consumer_token["key"]),
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": str(int(time.time())),
        "oauth_nonce": uuid.uuid4().hex,
        "oauth_version": "1.0",
    }


def _oauth_escape(value: Any) -> str:
    """RFC 5849 3.6 percent-encoding: everything but unreserved characters,
    of the UTF-8 bytes."""
    if not isinstance(value, (str, bytes)):
        value = str(value)
    return urllib.parse.quote(escape.utf8(value), safe="~")


def _normalized_url(url: str) -> str:
    """RFC 5849 3.4.1.2: scheme and host in lower case, default port
    dropped, no query or fragment."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    netloc = parts.netloc.lower()
    default_port = {"http": ":80", "https": ":443"}.get(scheme)
    if default_port and netloc.endswith(default_port):
        netloc = netloc[: -len(default_port)]
    return f"{scheme}://{netloc}{parts.path or '/'}"


def _signature_base(method: str, url: str, parameters: dict[str, Any], escape_keys: bool) -> bytes:
    """RFC 5849 3.4.1: method, URL and sorted parameters, each encoded."""
    if escape_keys:
        pairs = sorted((_oauth_escape(k), _oauth_escape(v)) for k, v in parameters.items())
    else:
        # The original OAuth 1.0 implementations sorted and joined raw names.
        pairs = sorted((str(k), _oauth_escape(v)) for k, v in parameters.items())
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    elements = (method.upper(), _normalized_url(url), normalized)
    return "&".join(_oauth_escape(e) for e in elements).encode("ascii")


def _hmac_sha1(key: bytes, base: bytes) -> str:
    return base64.b64encode(hmac.new(key, base, hashlib.sha1).digest()).decode("ascii")


def _oauth_signature(
    consumer_token: dict[str, Any],
    method: str,
    url: str,
    parameters: dict[str, Any] = {},  # noqa: B006 (never mutated)
    token: Optional[dict[str, Any]] = None,
) -> str:
    """HMAC-SHA1 signature as OAuth 1.0 providers compute it: the secrets
    joined unescaped."""
    key = escape.utf8(consumer_token["secret"]) + b"&" + escape.utf8(token["secret"] if token else b"")
    return _hmac_sha1(key, _signature_base(method, url, parameters, escape_keys=False))


def _oauth10a_signature(
    consumer_token: dict[str, Any],
    method: str,
    url: str,
    parameters: dict[str, Any] = {},  # noqa: B006 (never mutated)
    token: Optional[dict[str, Any]] = None,
) -> str:
    """HMAC-SHA1 signature of RFC 5849 3.4.2 (OAuth 1.0a)."""
    key = (
        _oauth_escape(consumer_token["secret"]) + "&" + _oauth_escape(token["secret"] if token else "")
    ).encode("ascii")
    return _hmac_sha1(key, _signature_base(method, url, parameters, escape_keys=True))


def _oauth_parse_response(body: bytes) -> dict[str, Any]:
    """A token answer (``oauth_token=...&oauth_token_secret=...``) as a
    dict with ``key``, ``secret`` and the other fields sent."""
    fields = urllib.parse.parse_qs(escape.to_unicode(body), keep_blank_values=False)
    if "oauth_token" not in fields or "oauth_token_secret" not in fields:
        raise AuthError(f"OAuth provider sent no token: {body!r}")
    token: dict[str, Any] = {
        "key": fields.pop("oauth_token")[0],
        "secret": fields.pop("oauth_token_secret")[0],
    }
    for name, values in fields.items():
        token[name] = values[0]
    return token
