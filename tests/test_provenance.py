"""An optimisation branch's provenance: each revision a commit whose trailers say what it was built from, read
back from a real git repository, and merged into a tree a later push changed."""

from pathlib import Path

import git

from pytest_soap.github import provenance

ACTOR = git.Actor("t", "t@example.com")
MODULE = '''\
def f(xs):
    return [x for x in xs if x not in xs[:0]]


def g(xs):
    return sorted(xs)[::-1]


def h(xs):
    return len(xs)
'''
F_REVISED = MODULE.replace("[x for x in xs if x not in xs[:0]]", "list(xs)")
G_REVISED = MODULE.replace("sorted(xs)[::-1]", "sorted(xs, reverse=True)")


def commit(repo, text, message):
    (Path(repo.working_dir) / "work.py").write_text(text)
    repo.index.add(["work.py"])
    return repo.index.commit(message, author=ACTOR, committer=ACTOR)


def revision(qualname, before, after):
    return {"file": "work.py", "qualname": qualname, "before": {"time_s": before, "peak_mb": 2.0},
            "after": {"time_s": after, "peak_mb": 1.5}}


def branch(tmp_path):
    """A head commit, then a branch of two revisions of one file, f's and then g's, each a commit of its own."""
    repo = git.Repo.init(tmp_path, initial_branch="feature")
    head = commit(repo, MODULE, "the pull request's head")
    repo.git.checkout("-b", "soap/feature")
    source_f, source_g = provenance.source_hash(MODULE, "f"), provenance.source_hash(MODULE, "g")
    commit(repo, F_REVISED, provenance.message(revision("f", 0.5, 0.01), source_f, head.hexsha, "b" * 40, 1200))
    both = F_REVISED.replace("sorted(xs)[::-1]", "sorted(xs, reverse=True)")
    commit(repo, both, provenance.message(revision("g", 0.25, 0.125), source_g, head.hexsha, "b" * 40, 800))
    return repo, head


def test_each_revision_reads_back_as_it_was_written_oldest_first_and_the_head_is_not_one(tmp_path):
    repo, head = branch(tmp_path)
    built = provenance.read_branch(repo, "soap/feature")
    assert [(b.key, b.head, b.base, b.tokens) for b in built] == [
        ("work.py::f", head.hexsha, "b" * 40, 1200), ("work.py::g", head.hexsha, "b" * 40, 800)]
    assert built[0].parent == head.hexsha and built[1].parent == built[0].commit
    assert built[0].before == {"time_s": 0.5, "peak_mb": 2.0} and built[1].after == {"time_s": 0.125, "peak_mb": 1.5}
    assert built[0].source == provenance.source_hash(MODULE, "f") != built[1].source
    subject = repo.commit("soap/feature").message.splitlines()[0]
    assert subject == "pytest-soap: optimise g in work.py"
    entry = built[1].as_optimization()
    assert entry["status"] == "accepted" and entry["reused"] == {"from": f"commit {built[1].commit[:12]}", "tokens": 800}


def test_a_source_hash_follows_the_function_alone():
    moved = "import os\n\n\n" + MODULE.replace("return len(xs)", "return len(xs) + 1")
    assert provenance.source_hash(moved, "f") == provenance.source_hash(MODULE, "f")
    assert provenance.source_hash(F_REVISED, "f") != provenance.source_hash(MODULE, "f")
    assert provenance.source_hash(MODULE, "nowhere") is None and provenance.source_hash("def (", "f") is None


def test_a_revision_merges_into_a_tree_a_push_changed_elsewhere_and_not_where_it_changed_the_same_lines(tmp_path):
    repo, _ = branch(tmp_path)
    first, second = provenance.read_branch(repo, "soap/feature")
    pushed = MODULE.replace("return len(xs)", "return len(list(xs))")  # h changed; f and g as they were
    # Each revision alone: g's commit brings g's change, and not f's, which came before it on the branch.
    assert provenance.seed(repo, first, pushed) == pushed.replace("[x for x in xs if x not in xs[:0]]", "list(xs)")
    assert provenance.seed(repo, second, pushed) == pushed.replace("sorted(xs)[::-1]", "sorted(xs, reverse=True)")
    assert provenance.seed(repo, first, MODULE) == F_REVISED  # the tree it was built on: the revision as it was
    # The push rewrote the very line f's revision changes: no clean merge, and no guess.
    clashing = MODULE.replace("[x for x in xs if x not in xs[:0]]", "[x for x in xs if x is not None]")
    assert provenance.seed(repo, first, clashing) is None
