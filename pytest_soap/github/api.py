"""A small client for the few GitHub REST endpoints the action uses: issue comments, pull requests and branch
deletion.

It runs on the standard library's urllib (JSON in and out, with a timeout), so the action needs no new
dependency. Every failure is a GitHubError whose text is one line for the job summary, and the token
never appears in it.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

PER_PAGE = 100  # GitHub's largest page
MAX_PAGES = 100  # 10,000 comments: past this a server that ignores `page` would keep us reading forever
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
API_VERSION = "2022-11-28"
USER_AGENT = "pytest-soap"
MESSAGE_CHARS = 300  # GitHub's message in an error line is cut here, to keep the summary readable

NO_SUCH_REF = "Reference does not exist"  # GitHub's 422 for a branch that is already gone
CREATE_PR_REFUSED = "not permitted to create or approve pull requests"
CREATE_PR_SETTING = (
    "Settings → Actions → General → Workflow permissions → "
    '"Allow GitHub Actions to create and approve pull requests"'
)
WRITE_PERMISSIONS_HINT = (
    "the workflow needs `permissions: contents: write, pull-requests: write` "
    "(a pull request from a fork gets a read-only token)"
)


class GitHubError(Exception):
    """A call GitHub refused or that failed; str(e) is ONE line for the job summary.
    .status: the HTTP status or None."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever GitHub sent
        self.status = status


@dataclass
class _Answer:
    """One HTTP answer, before it is judged."""

    status: int
    headers: Any  # an http.client.HTTPMessage: case-insensitive .get
    body: bytes


class GitHub:
    def __init__(
        self,
        api_url: str,
        repository: str,
        token: str,
        timeout: float = 30.0,
        max_wait_s: float = 60.0,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        owner, slash, name = repository.partition("/")
        if not (owner and slash and name) or "/" in name:
            raise ValueError(f"repository must be 'owner/name', not {repository!r}")
        self.api_url = api_url.rstrip("/")
        self.repository = repository
        self.owner = owner
        self.timeout = timeout
        self.max_wait_s = max_wait_s
        self.calls = 0  # write calls sent, retries included: a fork PR's run must leave this at 0
        self._token = token
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"GitHub(api_url={self.api_url!r}, repository={self.repository!r}, token=***)"

    # -- comments ------------------------------------------------------------------------------------

    def find_comment(self, number: int, marker: str) -> dict | None:
        """The first comment on issue or pull `number` whose body contains `marker`, reading every page."""
        for page in range(1, MAX_PAGES + 1):
            path = f"/repos/{self.repository}/issues/{number}/comments?" + urlencode(
                {"per_page": PER_PAGE, "page": page}
            )
            comments = self._list("GET", path)
            for comment in comments:
                if isinstance(comment, dict) and marker in (comment.get("body") or ""):
                    return comment
            if len(comments) < PER_PAGE:
                break
        return None

    def upsert_comment(self, number: int, marker: str, body: str, create: bool = True) -> dict | None:
        """Update the comment that carries `marker`, or (with `create`) create it: one sticky comment per pull
        request. None when there is none and none was to be created."""
        if marker not in body:
            body = f"{marker}\n{body}"  # the marker is how the next run finds this comment
        existing = self.find_comment(number, marker)
        if existing is not None:
            path = f"/repos/{self.repository}/issues/comments/{existing['id']}"
            return self._object("PATCH", path, {"body": body})
        if not create:
            return None
        return self.comment(number, body)

    def comment(self, number: int, body: str) -> dict:
        """A new comment on issue or pull `number`: a plain one, not the sticky one."""
        return self._object("POST", f"/repos/{self.repository}/issues/{number}/comments", {"body": body})

    # -- pull requests -------------------------------------------------------------------------------

    def find_pull(self, head_branch: str, base_branch: str) -> dict | None:
        """The open pull request from this repository's `head_branch` into `base_branch`, if any."""
        query = urlencode({"state": "open", "head": f"{self.owner}:{head_branch}", "base": base_branch})
        pulls = self._list("GET", f"/repos/{self.repository}/pulls?{query}")
        return pulls[0] if pulls else None

    def upsert_pull(self, head_branch: str, base_branch: str, title: str, body: str) -> dict:
        """Update the open pull request from `head_branch` into `base_branch`, or open it."""
        existing = self.find_pull(head_branch, base_branch)
        if existing is not None:
            return self._object(
                "PATCH", f"/repos/{self.repository}/pulls/{existing['number']}", {"title": title, "body": body}
            )
        return self._object(
            "POST",
            f"/repos/{self.repository}/pulls",
            {"title": title, "body": body, "head": head_branch, "base": base_branch,
             "maintainer_can_modify": True},
        )

    def close_pull(self, number: int) -> dict:
        """Close pull request `number` (its branch stays)."""
        return self._object("PATCH", f"/repos/{self.repository}/pulls/{number}", {"state": "closed"})

    # -- branches ------------------------------------------------------------------------------------

    def delete_branch(self, branch: str) -> bool:
        """Delete `branch` from the repository: True when it went, False when it was already gone (GitHub's 422
        "Reference does not exist"; a 404 means the token cannot see the repository, and is raised)."""
        ref = "/".join(quote(segment, safe="") for segment in branch.split("/"))
        try:
            self._call("DELETE", f"/repos/{self.repository}/git/refs/heads/{ref}")
        except GitHubError as refused:
            if refused.status == 422 and NO_SUCH_REF in str(refused):
                return False
            raise
        return True

    # -- HTTP ----------------------------------------------------------------------------------------

    def _list(self, method: str, path: str) -> list:
        value = self._call(method, path)
        if not isinstance(value, list):
            raise self._error(f"GitHub answered {method} {_bare(path)} with {_kind(value)}, not a list")
        return value

    def _object(self, method: str, path: str, payload: dict) -> dict:
        value = self._call(method, path, payload)
        if not isinstance(value, dict):
            raise self._error(f"GitHub answered {method} {_bare(path)} with {_kind(value)}, not an object")
        return value

    def _call(self, method: str, path: str, payload: dict | None = None) -> Any:
        """The JSON GitHub answers, after one retry if a short rate limit got in the way."""
        answer = self._send(method, path, payload)
        wait = _rate_limit_wait(answer)
        if wait is not None and wait <= self.max_wait_s:
            self._sleep(wait)
            answer = self._send(method, path, payload)
        if 200 <= answer.status < 300:
            return self._json(method, path, answer)
        raise self._refusal(method, path, answer)

    def _send(self, method: str, path: str, payload: dict | None) -> _Answer:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": USER_AGENT,
        }
        if self._token:  # no token: an anonymous call, which GitHub refuses for every write
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.api_url + path, data=data, headers=headers, method=method)
        if method in WRITE_METHODS:
            self.calls += 1
        where = f"{method} {_bare(path)}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as refused:
            with refused:
                return _Answer(refused.code, refused.headers, _read_quietly(refused))
        except TimeoutError:
            raise self._error(f"GitHub did not answer {where} within {self.timeout:g} s") from None
        except urllib.error.URLError as failed:
            if isinstance(failed.reason, TimeoutError):
                raise self._error(f"GitHub did not answer {where} within {self.timeout:g} s") from None
            raise self._error(f"could not reach GitHub at {self.api_url} for {where}: {failed.reason}") from None
        except (OSError, http.client.HTTPException) as failed:
            raise self._error(f"the connection to GitHub broke during {where}: {_describe(failed)}") from None

    def _json(self, method: str, path: str, answer: _Answer) -> Any:
        if not answer.body.strip():
            return None
        try:
            return json.loads(answer.body)
        except ValueError:
            content_type = answer.headers.get("Content-Type") or "no content type"
            raise self._error(
                f"GitHub answered {method} {_bare(path)} ({answer.status}) with a body that is not JSON"
                f" ({content_type}): {_snippet(answer.body)}",
                answer.status,
            ) from None

    def _refusal(self, method: str, path: str, answer: _Answer) -> GitHubError:
        """The one line that says why GitHub refused, and what to change where that is known."""
        status, where = answer.status, f"{method} {_bare(path)}"
        message = _message(answer)
        if _is_rate_limited(answer):
            return self._error(f"GitHub's rate limit was reached at {where} ({status}); {_reset_text(answer)}",
                               status)
        if status == 403 and CREATE_PR_REFUSED in message:
            return self._error(
                f"GitHub refused to open the pull request (403): {message.rstrip('.')};"
                f" allow it under {CREATE_PR_SETTING}",
                status,
            )
        if status in (401, 403):
            line = f"GitHub refused {where} ({status}): {message}"
            if status == 401:
                line += "; the token is missing, expired or wrong"
            elif method in WRITE_METHODS:
                line += f"; {WRITE_PERMISSIONS_HINT}"
            return self._error(line, status)
        if status == 404:
            return self._error(
                f"GitHub answered {where} with 404: {message} (or the token cannot see {self.repository})", status
            )
        return self._error(f"GitHub answered {where} with {status}: {message}", status)

    def _error(self, message: str, status: int | None = None) -> GitHubError:
        if self._token:
            message = message.replace(self._token, "***")  # in case anything echoed it back
        return GitHubError(message, status)


def _rate_limit_wait(answer: _Answer) -> float | None:
    """Seconds to wait before GitHub takes calls again; None when this is no rate limit or the wait is unknown."""
    if not _is_rate_limited(answer):
        return None
    retry_after = answer.headers.get("Retry-After")
    if retry_after:
        return _seconds_from_retry_after(retry_after)
    reset = _reset_epoch(answer)
    if reset is None:
        return None
    return float(max(0, math.ceil(reset - time.time())))


def _is_rate_limited(answer: _Answer) -> bool:
    if answer.status == 429:
        return True
    return answer.status == 403 and (
        answer.headers.get("X-RateLimit-Remaining") == "0" or bool(answer.headers.get("Retry-After"))
    )


def _seconds_from_retry_after(value: str) -> float | None:
    """Retry-After is seconds, or an HTTP date."""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _reset_epoch(answer: _Answer) -> float | None:
    retry_after = answer.headers.get("Retry-After")
    if retry_after:
        seconds = _seconds_from_retry_after(retry_after)
        return None if seconds is None else time.time() + seconds
    try:
        return float(answer.headers.get("X-RateLimit-Reset", ""))
    except ValueError:
        return None


def _reset_text(answer: _Answer) -> str:
    reset = _reset_epoch(answer)
    if reset is None:
        return "try again later"
    when = datetime.fromtimestamp(reset, tz=timezone.utc)
    return f"it resets at {when:%Y-%m-%d %H:%M:%S} UTC"


def _message(answer: _Answer) -> str:
    """GitHub's own words from an error body: its message and any validation errors; else the start of the body."""
    try:
        data = json.loads(answer.body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        if answer.body.strip():
            return _snippet(answer.body)
        return http.client.responses.get(answer.status, "no message")
    message = str(data.get("message") or "no message")
    details = [_detail(error) for error in data.get("errors") or [] if _detail(error)]
    if details:
        message += " (" + "; ".join(details) + ")"
    return message[:MESSAGE_CHARS]


def _detail(error: Any) -> str:
    """One validation error of a 422, which GitHub gives as text or as resource, field and code."""
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        if error.get("message"):
            return str(error["message"])
        return " ".join(str(error[key]) for key in ("resource", "field", "code") if error.get(key))
    return ""


def _read_quietly(response: Any) -> bytes:
    try:
        return response.read()
    except (OSError, http.client.HTTPException):
        return b""


def _bare(path: str) -> str:
    """The path without its query, as error lines name it."""
    return path.split("?", 1)[0]


def _snippet(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return text[:80] + ("…" if len(text) > 80 else "")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", type(None): "nothing"}.get(type(value), type(value).__name__)


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
