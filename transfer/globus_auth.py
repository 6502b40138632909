"""Globus credentials of a site: the native-app login flow, and the token file it leaves.

``balsam globus login`` runs :func:`login`: it prints Globus' authorize URL, the user signs in in any
browser and pastes back the code, and the transfer tokens (access token, refresh token, expiry) go to
the site's token file. The file is created with mode 0600 and written atomically (temp + rename); a
token file that group or others can read is refused, since a refresh token grants the user's Globus
transfer rights to whoever holds it.

:func:`make_authorizer` turns the file into a ``RefreshTokenAuthorizer``: the SDK refreshes an
expired access token by itself, and its ``on_refresh`` callback writes the new tokens back, so an
agent keeps working for as long as the refresh token is valid.

Nothing here knows about sites: the caller passes the token file path and the client id.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import globus_sdk
from globus_sdk.scopes import GCSCollectionScopes, TransferScopes

from balsam.transfer.base import TransferError

TRANSFER_RS = "transfer.api.globus.org"  # the resource server whose tokens we keep
FORMAT = 1
LOGIN_HINT = "run `balsam globus login`"


def require_client_id(client_id: str) -> str:
    """The client id, or a TransferError saying where to set it."""
    if not client_id or not client_id.strip():
        raise TransferError(
            "no Globus client id: register a native app at https://app.globus.org/settings/developers and set "
            'its id in balsam-site.toml as [transfer] globus_client_id = "..."'
        )
    return client_id.strip()


def login_scopes(collections: Iterable[str] = ()) -> list[globus_sdk.Scope]:
    """The transfer scope, with a data_access dependency for each named GCSv5 mapped collection."""
    scope = TransferScopes.all
    for collection in collections:
        scope = scope.with_dependency(GCSCollectionScopes(collection).data_access)
    return [scope]


# -- the token file ------------------------------------------------------------------------------


def save_tokens(path: Path, tokens: dict[str, Any]) -> None:
    """Write ``tokens`` to ``path``, mode 0600, atomically: a reader sees the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL and mode 0o600 at creation: the secret is never readable by others, not even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"format": FORMAT, **tokens}, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # in case a umask or an odd filesystem changed it
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_tokens(path: Path) -> dict[str, Any] | None:
    """The stored tokens; None when there is no file. Refuses a file that others may read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TransferError(f"cannot read the Globus token file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd) as handle:
        mode = os.fstat(handle.fileno()).st_mode  # of the file we opened, not of whatever the name points at later
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TransferError(
                f"the Globus token file {path} can be read by group or others (mode {stat.S_IMODE(mode):o}): it holds "
                f"a refresh token that grants your Globus transfer rights; fix it with `chmod 600 {path}` "
                f"(and consider `balsam globus logout` and a new login if others may have read it)"
            )
        try:
            doc = json.load(handle)
        except ValueError as exc:
            raise TransferError(f"the Globus token file {path} is not valid JSON ({exc}); {LOGIN_HINT} again") from None
    if not isinstance(doc, dict) or not doc.get("refresh_token") or not doc.get("access_token"):
        raise TransferError(f"the Globus token file {path} holds no transfer tokens; {LOGIN_HINT} again")
    return doc


def delete_tokens(path: Path) -> bool:
    """Remove the token file; whether there was one."""
    try:
        Path(path).unlink()
        return True
    except FileNotFoundError:
        return False


def _tokens_from(response: globus_sdk.OAuthTokenResponse, client_id: str, previous: dict | None = None) -> dict:
    by_rs = response.by_resource_server
    if TRANSFER_RS not in by_rs:
        raise TransferError(f"Globus returned no tokens for {TRANSFER_RS} (got: {', '.join(by_rs) or 'none'})")
    got = by_rs[TRANSFER_RS]
    refresh = got.get("refresh_token") or (previous or {}).get("refresh_token")
    if not refresh:
        raise TransferError("Globus returned no refresh token: the login must ask for refresh tokens")
    return {
        "client_id": client_id,
        "resource_server": TRANSFER_RS,
        "access_token": got["access_token"],
        "refresh_token": refresh,
        "expires_at_seconds": int(got["expires_at_seconds"]),
        "scope": got.get("scope", ""),
        "saved_at": int(time.time()),
    }


# -- the login flow ------------------------------------------------------------------------------


def start_login(client_id: str, collections: Iterable[str] = ()) -> tuple[globus_sdk.NativeAppAuthClient, str]:
    """A native-app client with its flow started, and the URL the user must open."""
    client = globus_sdk.NativeAppAuthClient(require_client_id(client_id))
    client.oauth2_start_flow(requested_scopes=login_scopes(collections), refresh_tokens=True,
                             prefill_named_grant="balsam site agent")  # fmt: skip
    return client, client.oauth2_get_authorize_url()


def finish_login(client: globus_sdk.NativeAppAuthClient, code: str, token_file: Path) -> dict[str, Any]:
    """Exchange the pasted ``code`` for tokens and store them; the stored document."""
    code = code.strip()
    if not code:
        raise TransferError("no authorization code given; the login was not completed")
    try:
        response = client.oauth2_exchange_code_for_tokens(code)
    except globus_sdk.GlobusAPIError as exc:
        raise TransferError(f"Globus refused the authorization code ({exc.http_status} {exc.code}): "
                            f"{exc.message or exc.text}; {LOGIN_HINT} again") from None  # fmt: skip
    except globus_sdk.NetworkError as exc:
        raise TransferError(f"cannot reach Globus Auth: {exc}") from None
    tokens = _tokens_from(response, client.client_id or "")
    save_tokens(token_file, tokens)
    return tokens


def login(client_id: str, token_file: Path, *, collections: Iterable[str] = (), read_code: Callable[[str], str] = input,
          show: Callable[[str], None] = print, open_browser: bool = False) -> dict[str, Any]:  # fmt: skip
    """The whole interactive login: show the URL, read the code, store the tokens."""
    client, url = start_login(client_id, collections)
    show(f"Open this URL, sign in to Globus and allow access:\n\n  {url}\n")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    return finish_login(client, read_code("Paste the authorization code here: "), token_file)


# -- using the tokens ----------------------------------------------------------------------------


def make_authorizer(token_file: Path, client_id: str) -> globus_sdk.RefreshTokenAuthorizer:
    """An authorizer for a TransferClient that refreshes itself and writes refreshed tokens back."""
    client_id = require_client_id(client_id)
    tokens = load_tokens(token_file)
    if tokens is None:
        raise TransferError(f"not logged in to Globus (no {token_file}); {LOGIN_HINT}")
    if tokens.get("client_id") and tokens["client_id"] != client_id:
        raise TransferError(f"the Globus tokens in {token_file} were issued to client {tokens['client_id']}, not to "
                            f"transfer.globus_client_id {client_id}; {LOGIN_HINT} again")  # fmt: skip

    def on_refresh(response: globus_sdk.OAuthRefreshTokenResponse) -> None:
        # Refresh tokens may rotate: losing the new one would log the site out at the next restart.
        save_tokens(token_file, _tokens_from(response, client_id, previous=tokens))

    return globus_sdk.RefreshTokenAuthorizer(
        tokens["refresh_token"], globus_sdk.NativeAppAuthClient(client_id), access_token=tokens["access_token"],
        expires_at=int(tokens["expires_at_seconds"]), on_refresh=on_refresh,
    )  # fmt: skip


def transfer_client(token_file: Path, client_id: str) -> globus_sdk.TransferClient:
    """A TransferClient on the stored tokens."""
    return globus_sdk.TransferClient(authorizer=make_authorizer(token_file, client_id))


def token_status(token_file: Path) -> dict[str, Any]:
    """What ``balsam globus status`` shows: logged in or not, and when the access token expires."""
    tokens = load_tokens(token_file)
    if tokens is None:
        return {"logged_in": False, "token_file": str(token_file)}
    expires = int(tokens.get("expires_at_seconds", 0))
    return {"logged_in": True, "token_file": str(token_file), "client_id": tokens.get("client_id", ""),
            "scope": tokens.get("scope", ""), "expires_at_seconds": expires,
            "access_token_expired": expires <= time.time(), "saved_at": tokens.get("saved_at")}  # fmt: skip
