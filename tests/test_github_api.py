"""The GitHub client: real HTTP against the loopback fake of the REST endpoints the action uses."""

from __future__ import annotations

import socket
import time
import urllib.request
from datetime import datetime, timezone

import git
import pytest

from pytest_soap.github.api import GitHub, GitHubError

from github_server import GitHubServer

TOKEN = "ghs_s3cretTOKENvalue123"
MARKER = "<!-- pytest-soap -->"
COMMENTS = "/repos/owner/repo/issues/7/comments"
PULLS = "/repos/owner/repo/pulls"
REFS = "/repos/owner/repo/git/refs/heads"
ACTOR = git.Actor("dev", "dev@example.com")


def client(server: GitHubServer, sleeps: list[float] | None = None, **options) -> GitHub:
    options.setdefault("token", TOKEN)
    record = sleeps.append if sleeps is not None else _no_sleep
    return GitHub(server.url, "owner/repo", sleep=record, **options)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"the client slept {seconds} s where it should not wait")


def refusal(call) -> GitHubError:
    """The GitHubError that `call` raises, checked to be one line."""
    with pytest.raises(GitHubError) as caught:
        call()
    line = str(caught.value)
    assert line and "\n" not in line and line == line.strip()
    assert "Traceback" not in line
    return caught.value


# -- comments ------------------------------------------------------------------------------------------


def test_upsert_comment_twice_leaves_one_comment_updated():
    with GitHubServer() as server:
        github = client(server)
        first = github.upsert_comment(7, MARKER, f"{MARKER}\nfirst run")
        second = github.upsert_comment(7, MARKER, f"{MARKER}\nsecond run")

    (comment,) = server.comments[7]
    assert comment["body"] == f"{MARKER}\nsecond run"
    assert first["id"] == second["id"] == comment["id"]
    assert second["html_url"].endswith(f"#issuecomment-{comment['id']}")
    assert [(call.method, call.path.split("?")[0]) for call in server.writes] == [
        ("POST", COMMENTS),
        ("PATCH", f"/repos/owner/repo/issues/comments/{comment['id']}"),
    ]
    assert github.calls == 2


def test_every_call_carries_githubs_headers():
    with GitHubServer() as server:
        client(server).upsert_comment(7, MARKER, "table")

    for call in server.calls:
        assert call.headers["authorization"] == f"Bearer {TOKEN}"
        assert call.headers["accept"] == "application/vnd.github+json"
        assert call.headers["x-github-api-version"] == "2022-11-28"
        assert call.headers["user-agent"] == "pytest-soap"
    assert server.writes[0].headers["content-type"] == "application/json"


def test_the_marker_is_put_in_front_of_a_body_that_lacks_it():
    with GitHubServer() as server:
        client(server).upsert_comment(7, MARKER, "| test | ratio |")

    (comment,) = server.comments[7]
    assert comment["body"] == f"{MARKER}\n| test | ratio |"
    assert comment["user"]["login"] == "github-actions[bot]"


def test_the_marked_comment_is_found_on_the_second_page():
    with GitHubServer() as server:
        for i in range(150):
            server.add_comment(7, f"{MARKER}\nan earlier run" if i == 120 else f"review comment {i}")
        marked_id = server.comments[7][120]["id"]
        github = client(server)
        github.upsert_comment(7, MARKER, "this run")

    reads = [call.path for call in server.calls if call.method == "GET"]
    assert reads == [f"{COMMENTS}?per_page=100&page=1", f"{COMMENTS}?per_page=100&page=2"]
    (write,) = server.writes
    assert (write.method, write.path) == ("PATCH", f"/repos/owner/repo/issues/comments/{marked_id}")
    assert len(server.comments[7]) == 150
    assert server.comments[7][120]["body"] == f"{MARKER}\nthis run"


def test_no_marked_comment_after_a_full_page_reads_the_next_page_and_finds_none():
    with GitHubServer() as server:
        for i in range(100):
            server.add_comment(7, f"review comment {i}")
        assert client(server).find_comment(7, MARKER) is None

    assert [call.path.split("page=")[-1] for call in server.calls] == ["1", "2"]


# -- pull requests -------------------------------------------------------------------------------------


def test_upsert_pull_twice_leaves_one_pull_updated():
    with GitHubServer() as server:
        github = client(server)
        opened = github.upsert_pull("soap/optimize-7", "feature", "Faster parse()", "first body")
        updated = github.upsert_pull("soap/optimize-7", "feature", "Faster parse() and dump()", "second body")

    (pull,) = server.pulls
    assert opened["number"] == updated["number"] == pull["number"]
    assert (pull["title"], pull["body"]) == ("Faster parse() and dump()", "second body")
    assert updated["html_url"].endswith(f"/pull/{pull['number']}")
    post, patch = server.writes
    assert (post.method, post.path) == ("POST", PULLS)
    assert post.json == {"title": "Faster parse()", "body": "first body", "head": "soap/optimize-7",
                         "base": "feature", "maintainer_can_modify": True}
    assert (patch.method, patch.path, patch.json) == (
        "PATCH", f"{PULLS}/{pull['number']}", {"title": "Faster parse() and dump()", "body": "second body"}
    )
    assert github.calls == 2


def test_find_pull_asks_for_the_open_pull_from_this_owners_branch_into_the_base():
    with GitHubServer() as server:
        server.add_pull("soap/optimize-7", "main")  # same branch, another base
        wanted = server.add_pull("soap/optimize-7", "feature")
        found = client(server).find_pull("soap/optimize-7", "feature")

    assert found["number"] == wanted["number"]
    (call,) = server.calls
    assert call.path == f"{PULLS}?state=open&head=owner%3Asoap%2Foptimize-7&base=feature"


def test_the_create_pull_request_refusal_names_the_setting_that_allows_it():
    with GitHubServer() as server:
        server.fail("POST", PULLS, 403, "GitHub Actions is not permitted to create or approve pull requests.")
        error = refusal(lambda: client(server).upsert_pull("soap/optimize-7", "feature", "t", "b"))

    assert error.status == 403
    assert "refused to open the pull request" in str(error)
    assert ("Settings → Actions → General → Workflow permissions → "
            '"Allow GitHub Actions to create and approve pull requests"') in str(error)
    assert server.pulls == []


def test_a_refused_write_says_which_permissions_the_workflow_needs():
    with GitHubServer() as server:
        server.fail("POST", COMMENTS, 403, "Resource not accessible by integration")
        error = refusal(lambda: client(server).upsert_comment(7, MARKER, "table"))

    assert str(error).startswith(f"GitHub refused POST {COMMENTS} (403): Resource not accessible by integration")
    assert "permissions: contents: write, pull-requests: write" in str(error)
    assert "fork" in str(error)


def test_a_refused_read_gives_no_write_permission_hint():
    with GitHubServer() as server:
        server.fail("GET", PULLS, 403, "Resource not accessible by integration")
        error = refusal(lambda: client(server).find_pull("soap/optimize-7", "feature"))

    assert str(error) == f"GitHub refused GET {PULLS} (403): Resource not accessible by integration"


def test_a_validation_failure_carries_githubs_reason():
    with GitHubServer() as server:
        error = refusal(lambda: client(server).upsert_pull("feature", "feature", "t", "b"))

    assert error.status == 422
    assert str(error) == (
        f"GitHub answered POST {PULLS} with 422: Validation Failed (No commits between feature and feature)"
    )


def test_close_pull_closes_it_so_find_pull_no_longer_finds_it():
    with GitHubServer() as server:
        pull = server.add_pull("soap/optimize-7", "feature")
        github = client(server)
        closed = github.close_pull(pull["number"])
        found = github.find_pull("soap/optimize-7", "feature")

    assert closed["number"] == pull["number"] and closed["state"] == "closed"
    assert found is None
    assert server.pulls[0]["state"] == "closed"
    (write,) = server.writes
    assert (write.method, write.path, write.json) == ("PATCH", f"{PULLS}/{pull['number']}", {"state": "closed"})
    assert github.calls == 1


def test_comment_posts_a_new_comment_beside_the_sticky_one():
    with GitHubServer() as server:
        github = client(server)
        github.upsert_comment(7, MARKER, "table")
        posted = github.comment(7, "Closed: the pull request's branch was merged.")

    sticky, plain = server.comments[7]
    assert posted["id"] == plain["id"] != sticky["id"]
    assert plain["body"] == "Closed: the pull request's branch was merged."
    assert sticky["body"] == f"{MARKER}\ntable"
    assert (server.writes[-1].method, server.writes[-1].path) == ("POST", COMMENTS)
    assert github.calls == 2


# -- branches ------------------------------------------------------------------------------------------


@pytest.fixture
def origin(tmp_path):
    """A bare repository with `main` and `soap/feature`, pushed from a clone."""
    bare = git.Repo.init(tmp_path / "origin.git", bare=True)
    dev = git.Repo.init(tmp_path / "dev", initial_branch="main")
    (tmp_path / "dev" / "README").write_text("shop\n")
    dev.git.add("--all")
    dev.index.commit("shop", author=ACTOR, committer=ACTOR)
    dev.create_remote("origin", str(bare.git_dir)).push("main")
    dev.git.checkout("-b", "soap/feature")
    dev.remotes.origin.push("soap/feature")
    assert {head.name for head in bare.heads} == {"main", "soap/feature"}
    return bare


def test_delete_branch_removes_it_and_a_second_delete_finds_it_gone(origin):
    with GitHubServer(origin=origin.git_dir) as server:
        github = client(server)
        assert github.delete_branch("soap/feature") is True
        assert [head.name for head in origin.heads] == ["main"]
        assert github.delete_branch("soap/feature") is False

    assert [(call.method, call.path) for call in server.writes] == [
        ("DELETE", f"{REFS}/soap/feature"), ("DELETE", f"{REFS}/soap/feature"),
    ]
    assert github.calls == 2


def test_delete_branch_quotes_each_segment_and_keeps_the_slashes(origin):
    origin.git.update_ref("refs/heads/soap/fix#7+1", "main")
    with GitHubServer(origin=origin.git_dir) as server:
        assert client(server).delete_branch("soap/fix#7+1") is True

    (call,) = server.writes
    assert call.path == f"{REFS}/soap/fix%237%2B1"
    assert {head.name for head in origin.heads} == {"main", "soap/feature"}


def test_delete_branch_in_a_repository_the_token_cannot_see_is_a_404_line_not_a_branch_already_gone():
    with GitHubServer() as server:  # no origin: the fake answers 404, as GitHub does for a repository out of sight
        error = refusal(lambda: client(server).delete_branch("soap/feature"))
    assert error.status == 404 and "\n" not in str(error)


def test_a_refused_branch_deletion_says_which_permissions_the_workflow_needs(origin):
    with GitHubServer(origin=origin.git_dir) as server:
        server.fail("DELETE", REFS, 403, "Resource not accessible by integration")
        error = refusal(lambda: client(server).delete_branch("soap/feature"))

    assert error.status == 403
    assert str(error).startswith(
        f"GitHub refused DELETE {REFS}/soap/feature (403): Resource not accessible by integration"
    )
    assert "permissions: contents: write, pull-requests: write" in str(error)
    assert {head.name for head in origin.heads} == {"main", "soap/feature"}


def test_another_refusal_of_a_branch_deletion_is_raised(origin):
    with GitHubServer(origin=origin.git_dir) as server:
        server.fail("DELETE", REFS, 422, "Reference update failed")
        error = refusal(lambda: client(server).delete_branch("soap/feature"))

    assert str(error) == f"GitHub answered DELETE {REFS}/soap/feature with 422: Reference update failed"


# -- rate limits ---------------------------------------------------------------------------------------


def test_a_short_retry_after_is_waited_out_and_the_call_retried_once():
    sleeps: list[float] = []
    with GitHubServer() as server:
        server.fail("GET", COMMENTS, 403, "You have exceeded a secondary rate limit.", {"Retry-After": "2"})
        comment = client(server, sleeps).upsert_comment(7, MARKER, "table")

    assert sleeps == [2.0]
    assert comment["body"] == f"{MARKER}\ntable"
    assert [call.method for call in server.calls] == ["GET", "GET", "POST"]


def test_a_near_reset_is_waited_for():
    sleeps: list[float] = []
    with GitHubServer() as server:
        reset = int(time.time()) + 5
        server.fail("GET", PULLS, 429, "API rate limit exceeded",
                    {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})
        assert client(server, sleeps).find_pull("soap/optimize-7", "feature") is None

    (wait,) = sleeps
    assert 0 < wait <= 60


def test_a_far_reset_is_reported_with_its_utc_time_and_not_waited_for():
    with GitHubServer() as server:
        reset = int(time.time()) + 3600
        server.fail("GET", COMMENTS, 403, "API rate limit exceeded for installation ID 1.",
                    {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})
        error = refusal(lambda: client(server).upsert_comment(7, MARKER, "table"))

    when = datetime.fromtimestamp(reset, tz=timezone.utc)
    assert "rate limit" in str(error)
    assert f"{when:%Y-%m-%d %H:%M:%S} UTC" in str(error)
    assert error.status == 403
    assert len(server.calls) == 1


def test_a_rate_limit_that_persists_after_the_wait_fails_after_one_retry():
    sleeps: list[float] = []
    with GitHubServer() as server:
        server.fail("POST", COMMENTS, 429, "You have exceeded a secondary rate limit.", {"Retry-After": "1"},
                    times=2)
        github = client(server, sleeps)
        error = refusal(lambda: github.upsert_comment(7, MARKER, "table"))

    assert sleeps == [1.0]
    assert "rate limit" in str(error) and "UTC" in str(error)
    assert len(server.writes) == github.calls == 2  # the retry is a write too
    assert server.comments == {}


def test_the_wait_limit_is_the_clients_choice():
    with GitHubServer() as server:
        server.fail("GET", PULLS, 429, "slow down", {"Retry-After": "5"})
        error = refusal(lambda: client(server, max_wait_s=1).find_pull("soap/optimize-7", "feature"))

    assert error.status == 429


# -- failures of every other kind ----------------------------------------------------------------------


def test_a_server_error_is_one_line_with_its_status_and_message():
    with GitHubServer() as server:
        server.fail("GET", PULLS, 500, "Server Error\nplease try again")
        error = refusal(lambda: client(server).find_pull("soap/optimize-7", "feature"))

    assert error.status == 500
    assert str(error) == f"GitHub answered GET {PULLS} with 500: Server Error please try again"


def test_a_body_that_is_not_json_is_one_line():
    with GitHubServer() as server:
        server.raw("GET", COMMENTS, 200, "<html>\n<body>Sign in to your proxy</body>\n</html>")
        error = refusal(lambda: client(server).find_comment(7, MARKER))

    assert "not JSON" in str(error)
    assert "text/html" in str(error) and "Sign in to your proxy" in str(error)


def test_an_error_page_that_is_not_json_is_one_line():
    with GitHubServer() as server:
        server.raw("POST", PULLS, 502, "<html>\n<h1>502 Bad Gateway</h1>\n</html>")
        error = refusal(lambda: client(server).upsert_pull("soap/optimize-7", "feature", "t", "b"))

    assert error.status == 502
    assert str(error).startswith(f"GitHub answered POST {PULLS} with 502:")
    assert "Bad Gateway" in str(error)


def test_json_of_the_wrong_shape_is_one_line():
    with GitHubServer() as server:
        server.raw("GET", PULLS, 200, '{"items": []}', content_type="application/json")
        error = refusal(lambda: client(server).find_pull("soap/optimize-7", "feature"))

    assert "with an object, not a list" in str(error)


def test_an_unauthenticated_call_is_refused_with_401():
    with GitHubServer() as server:
        github = client(server, token="")
        error = refusal(lambda: github.upsert_comment(7, MARKER, "table"))

    assert "authorization" not in server.calls[0].headers
    assert error.status == 401
    assert str(error).startswith(f"GitHub refused GET {COMMENTS} (401): Requires authentication")


def test_a_wrong_token_is_refused_with_401_and_either_auth_scheme_passes():
    with GitHubServer(token=TOKEN) as server:
        error = refusal(lambda: client(server, token="ghs_wrong").find_pull("soap/optimize-7", "feature"))
        assert "(401): Bad credentials" in str(error)
        assert client(server).find_pull("soap/optimize-7", "feature") is None

    with GitHubServer(token=TOKEN) as server:
        # Some tools still send the older `token` scheme; the fake accepts it as GitHub does.
        request = urllib.request.Request(server.url + PULLS, headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200


def test_another_repository_is_a_404_line():
    with GitHubServer(repository="owner/other") as server:
        error = refusal(lambda: client(server).find_comment(7, MARKER))

    assert error.status == 404
    assert str(error).startswith(f"GitHub answered GET {COMMENTS} with 404: Not Found")


def test_a_closed_port_is_one_line():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    github = GitHub(f"http://127.0.0.1:{port}", "owner/repo", TOKEN, timeout=2)
    error = refusal(lambda: github.find_pull("soap/optimize-7", "feature"))

    assert error.status is None
    assert str(error).startswith("could not reach GitHub at")


def test_a_call_that_outlasts_the_timeout_is_one_line():
    with GitHubServer() as server:
        server.stall("GET", PULLS, 1.0)
        error = refusal(lambda: client(server, timeout=0.1).find_pull("soap/optimize-7", "feature"))

    assert str(error) == f"GitHub did not answer GET {PULLS} within 0.1 s"


# -- the token and the write count ---------------------------------------------------------------------


@pytest.mark.parametrize("script", [
    lambda server: server.fail("GET", COMMENTS, 403, f"token {TOKEN} is not allowed"),
    lambda server: server.fail("GET", COMMENTS, 401, "Bad credentials"),
    lambda server: server.fail("GET", COMMENTS, 429, "slow down", {"Retry-After": "3600"}),
    lambda server: server.fail("POST", COMMENTS, 422, f"Validation Failed for {TOKEN}"),
    lambda server: server.raw("GET", COMMENTS, 200, f"<p>{TOKEN}</p>"),
    lambda server: server.raw("GET", COMMENTS, 500, f"Authorization: Bearer {TOKEN}"),
])
def test_the_token_appears_in_no_error_and_no_repr(script):
    with GitHubServer() as server:
        script(server)
        github = client(server)
        error = refusal(lambda: github.upsert_comment(7, MARKER, "table"))

    assert TOKEN not in str(error)
    assert TOKEN not in repr(error)
    assert TOKEN not in repr(github)
    assert "owner/repo" in repr(github)


def test_calls_counts_writes_only():
    with GitHubServer() as server:
        github = client(server)
        github.find_comment(7, MARKER)
        github.find_pull("soap/optimize-7", "feature")
        assert github.calls == 0
        github.upsert_comment(7, MARKER, "table")
        github.upsert_pull("soap/optimize-7", "feature", "t", "b")
        assert github.calls == 2

    assert len(server.writes) == 2
