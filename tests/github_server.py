"""A loopback fake of the few GitHub REST endpoints the action uses, with in-memory state for one repository.

`with GitHubServer() as github:` serves on 127.0.0.1 at `github.url` until the block ends. It speaks:

    GET   /repos/{repo}/issues/{number}/comments?per_page=&page=   (per_page defaults to 30, at most 100)
    POST  /repos/{repo}/issues/{number}/comments                   {"body"}
    GET   /repos/{repo}/issues/comments/{id}
    PATCH /repos/{repo}/issues/comments/{id}                       {"body"}
    GET   /repos/{repo}/pulls?state=&head=owner:branch&base=
    POST  /repos/{repo}/pulls                                      {"title", "body", "head", "base", ...}
    GET   /repos/{repo}/pulls/{number}
    PATCH /repos/{repo}/pulls/{number}                             {"title", "body", "state", "base"}
    DELETE /repos/{repo}/git/refs/heads/{branch}                   (the branch may have slashes, quoted or not)

Any issue number takes comments (the fake does not check that the issue exists). A closed pull request
({"state": "closed"}) is no longer listed by `?state=open`. Branches live in a real git repository: pass
`GitHubServer(origin=path)`, a local bare repository standing for the repository's git storage, and DELETE
removes the branch from it (`git update-ref -d`) and answers 204 with an empty body; a branch it does not have
is 422 "Reference does not exist", as GitHub answers; without `origin` every DELETE of a ref is 404. Every
request is recorded in `.calls`; `.fail(...)`, `.raw(...)` and `.stall(...)` script what the next matching
requests get.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

BOT = {"login": "github-actions[bot]", "type": "Bot"}
NO_CONTENT = object()  # an endpoint's answer that is no body at all (204), rather than JSON


@dataclass
class Call:
    method: str
    path: str  # with its query
    json: Any  # the parsed body, or None
    headers: dict[str, str]  # names in lower case


@dataclass
class _Script:
    """What the next `times` requests whose method matches and whose path starts with `path_prefix` get."""

    method: str
    path_prefix: str
    times: int
    status: int = 200
    body: bytes | None = None  # None: answer as usual
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # stall this long before answering


class GitHubServer:
    def __init__(
        self, repository: str = "owner/repo", token: str | None = None,
        origin: str | os.PathLike | None = None,
    ) -> None:
        """`token`: when given, any other token is answered 401 "Bad credentials"; else any token passes.
        `origin`: a local bare git repository standing for the repository's git storage, where DELETE of a
        branch takes effect; None: there is none, and such a DELETE is 404."""
        self.repository = repository
        self.origin = origin
        self.owner = repository.split("/")[0]
        self.token = token
        self.calls: list[Call] = []
        self.comments: dict[int, list[dict]] = {}  # issue number -> its comments, oldest first
        self.pulls: list[dict] = []
        self._scripts: list[_Script] = []
        self._comment_ids = count(1001)
        self._pull_numbers = count(1)
        self._lock = threading.RLock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._http.daemon_threads = True  # a stalled answer must not hold up the shutdown
        # A short poll interval, so that leaving the `with` block does not wait half a second.
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.01,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> GitHubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    @property
    def writes(self) -> list[Call]:
        return [call for call in self.calls if call.method != "GET"]

    # -- scripting -----------------------------------------------------------------------------------

    def fail(
        self, method: str, path_prefix: str, status: int, message: str,
        headers: dict[str, str] | None = None, times: int = 1,
    ) -> None:
        """The next `times` matching calls answer `status` with {"message": message} and these headers."""
        body = json.dumps({"message": message, "documentation_url": "https://docs.github.com/rest"}).encode()
        self._script(_Script(method.upper(), path_prefix, times, status, body, headers=dict(headers or {})))

    def raw(self, method: str, path_prefix: str, status: int, text: str,
            content_type: str = "text/html", times: int = 1) -> None:
        """The next `times` matching calls answer `status` with `text` as it is: a proxy's page, not JSON."""
        self._script(_Script(method.upper(), path_prefix, times, status, text.encode(), content_type))

    def stall(self, method: str, path_prefix: str, seconds: float, times: int = 1) -> None:
        """The next `times` matching calls wait `seconds` before they are answered as usual."""
        self._script(_Script(method.upper(), path_prefix, times, delay_s=seconds))

    def _script(self, script: _Script) -> None:
        with self._lock:
            self._scripts.append(script)

    def _scripted(self, method: str, path: str) -> _Script | None:
        with self._lock:
            for script in self._scripts:
                if script.method == method and path.startswith(script.path_prefix):
                    script.times -= 1
                    if script.times <= 0:
                        self._scripts.remove(script)
                    return script
        return None

    # -- state ---------------------------------------------------------------------------------------

    def add_comment(self, number: int, body: str, login: str = "someone") -> dict:
        """A comment already on issue `number` (not a recorded call): another user's, or an earlier run's."""
        with self._lock:
            comment_id = next(self._comment_ids)
            comment = {
                "id": comment_id,
                "body": body,
                "html_url": f"https://github.com/{self.repository}/pull/{number}#issuecomment-{comment_id}",
                "user": {"login": login, "type": "Bot" if login.endswith("[bot]") else "User"},
            }
            self.comments.setdefault(number, []).append(comment)
            return comment

    def add_pull(self, head: str, base: str, title: str = "a pull request", body: str = "") -> dict:
        """A pull request already open (not a recorded call)."""
        with self._lock:
            number = next(self._pull_numbers)
            pull = {
                "number": number,
                "title": title,
                "body": body,
                "state": "open",
                "head": {"ref": head, "label": f"{self.owner}:{head}"},
                "base": {"ref": base, "label": f"{self.owner}:{base}"},
                "html_url": f"https://github.com/{self.repository}/pull/{number}",
                "maintainer_can_modify": False,
                "user": dict(BOT),
            }
            self.pulls.append(pull)
            return pull

    # -- the endpoints: each returns (status, JSON), or (204, NO_CONTENT) -----------------------------

    def answer(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        prefix = f"/repos/{self.repository}/"
        if not path.startswith(prefix):
            return 404, {"message": "Not Found"}
        parts = path.removeprefix(prefix).strip("/").split("/")
        with self._lock:
            match method, parts:
                case "GET", ["issues", number, "comments"] if number.isdigit():
                    return 200, self._page(self.comments.get(int(number), []), query)
                case "POST", ["issues", number, "comments"] if number.isdigit():
                    if not _text(body, "body"):
                        return _invalid("body is missing")
                    comment = self.add_comment(int(number), body["body"], login=BOT["login"])
                    return 201, comment
                case ("GET" | "PATCH"), ["issues", "comments", comment_id] if comment_id.isdigit():
                    comment = self._comment(int(comment_id))
                    if comment is None:
                        return 404, {"message": "Not Found"}
                    if method == "PATCH":
                        if not _text(body, "body"):
                            return _invalid("body is missing")
                        comment["body"] = body["body"]
                    return 200, comment
                case "GET", ["pulls"]:
                    return 200, self._page(self._pulls_matching(query), query)
                case "POST", ["pulls"]:
                    return self._open_pull(body)
                case ("GET" | "PATCH"), ["pulls", number] if number.isdigit():
                    pull = next((p for p in self.pulls if p["number"] == int(number)), None)
                    if pull is None:
                        return 404, {"message": "Not Found"}
                    if method == "PATCH":
                        for key in ("title", "body", "state"):
                            if isinstance(body, dict) and key in body:
                                pull[key] = body[key]
                        if isinstance(body, dict) and "base" in body:
                            pull["base"] = {"ref": body["base"], "label": f"{self.owner}:{body['base']}"}
                    return 200, pull
                case "DELETE", ["git", "refs", "heads", *branch] if branch and all(branch):
                    return self._delete_branch(unquote("/".join(branch)))
        return 404, {"message": "Not Found"}

    def _delete_branch(self, branch: str) -> tuple[int, Any]:
        if self.origin is None:
            return 404, {"message": "Not Found"}
        ref = f"refs/heads/{branch}"
        known = subprocess.run(["git", "show-ref", "--verify", "--quiet", ref], cwd=self.origin,
                               check=False, capture_output=True)
        if known.returncode != 0:
            return 422, {"message": "Reference does not exist",
                         "documentation_url": "https://docs.github.com/rest/git/refs#delete-a-reference"}
        subprocess.run(["git", "update-ref", "-d", ref], cwd=self.origin, check=True, capture_output=True)
        return 204, NO_CONTENT

    def _comment(self, comment_id: int) -> dict | None:
        for comments in self.comments.values():
            for comment in comments:
                if comment["id"] == comment_id:
                    return comment
        return None

    def _pulls_matching(self, query: dict[str, str]) -> list[dict]:
        state = query.get("state", "open")
        head = query.get("head")  # "owner:branch", as GitHub wants it
        base = query.get("base")
        return [
            pull for pull in self.pulls
            if state in ("all", pull["state"])
            and (head is None or head == pull["head"]["label"])
            and (base is None or base == pull["base"]["ref"])
        ]

    def _open_pull(self, body: Any) -> tuple[int, Any]:
        for key in ("title", "head", "base"):
            if not _text(body, key):
                return _invalid(f"{key} is missing")
        head = body["head"].split(":")[-1]
        if self._pulls_matching({"head": f"{self.owner}:{head}", "base": body["base"]}):
            return _invalid(f"A pull request already exists for {self.owner}:{head}.")
        if head == body["base"]:
            return _invalid(f"No commits between {body['base']} and {head}")
        pull = self.add_pull(head, body["base"], body["title"], body.get("body") or "")
        pull["maintainer_can_modify"] = bool(body.get("maintainer_can_modify"))
        return 201, pull

    @staticmethod
    def _page(items: list[dict], query: dict[str, str]) -> list[dict]:
        per_page = min(int(query.get("per_page", 30)), 100)
        page = max(int(query.get("page", 1)), 1)
        return items[(page - 1) * per_page: page * per_page]


def _text(body: Any, key: str) -> bool:
    return isinstance(body, dict) and isinstance(body.get(key), str) and bool(body[key])


def _invalid(message: str) -> tuple[int, Any]:
    return 422, {"message": "Validation Failed", "errors": [{"message": message, "code": "custom"}]}


def _handler_for(server: GitHubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._handle()

        do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw_body = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw_body) if raw_body else None
            except ValueError:
                return self._send(400, {"message": "Problems parsing JSON"})
            headers = {name.lower(): value for name, value in self.headers.items()}
            method = self.command
            with server._lock:
                server.calls.append(Call(method, self.path, body, headers))

            script = server._scripted(method, self.path)
            if script is not None and script.delay_s:
                time.sleep(script.delay_s)
            if script is not None and script.body is not None:
                return self._send_bytes(script.status, script.body, script.content_type, script.headers)

            refusal = self._auth_refusal(headers.get("authorization", ""))
            if refusal:
                return self._send(401, {"message": refusal})
            split = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(split.query).items()}
            self._send(*server.answer(method, split.path, query, body))

        def _auth_refusal(self, authorization: str) -> str | None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() not in ("bearer", "token") or not token:
                return "Requires authentication"
            if server.token is not None and token != server.token:
                return "Bad credentials"
            return None

        def _send(self, status: int, payload: Any) -> None:
            if payload is NO_CONTENT:
                return self._send_empty(status)
            self._send_bytes(status, json.dumps(payload).encode(), "application/json; charset=utf-8", {})

        def _send_empty(self, status: int) -> None:
            """An answer with no body: no Content-Type, Content-Length 0 (GitHub's 204)."""
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the tests' output is not the place for an access log

    return Handler
