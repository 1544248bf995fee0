"""A small stand-in for the Hugging Face Hub HTTP API, for offline push/download round trips in tests.

It speaks the endpoints `huggingface_hub` (upload), `transformers` (model download) and `datasets` (dataset download)
use, as listed in docs of `/work/shared/reference/feasibility.md` §7:

* `POST /api/repos/create`, `POST /api/{type}s/{repo}/branch/{branch}`, `POST /api/validate-yaml`
* `POST /api/{type}s/{repo}/preupload/{rev}`: every file is uploaded in "regular" mode (no LFS, no Xet), so its bytes
  arrive base64-encoded inside the commit
* `POST /api/{type}s/{repo}/commit/{rev}`: NDJSON (`header`, `file`, `deletedFile`, `deletedFolder`)
* `GET /api/{type}s/{repo}[/revision/{rev}]`: repo info with `sha` and `siblings`
* `GET /api/{type}s/{repo}/tree/{rev}[/{path}]` and `POST /api/{type}s/{repo}/paths-info/{rev}`
* `HEAD`/`GET /[{type}s/]{repo}/resolve/{rev}/{path}` with `ETag`, `X-Repo-Commit`, `Content-Length` and byte ranges

Every commit is a full snapshot stored under `root/{type}s/{org}/{name}/{commit}/`, so a test can read exactly what
was uploaded. Errors carry the Hub's `X-Error-Code` header (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`), which
`huggingface_hub` turns into its typed exceptions. Only for tiny files: everything is inlined in JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import threading
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

REPO_TYPES = ("model", "dataset", "space")
EMPTY_COMMIT = "0" * 40


def git_blob_oid(content: bytes) -> str:
    """The git object id of a file (what the Hub reports as a regular file's `oid`/ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class FakeRepo:
    repo_type: str
    repo_id: str
    private: bool = False
    branches: dict[str, str] = field(default_factory=lambda: {"main": EMPTY_COMMIT})
    commit_messages: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    method: str
    path: str
    status: int
    authorization: str | None


class FakeHubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


class FakeHub:
    """`with FakeHub(tmp_path) as hub:` serves on `hub.endpoint` (127.0.0.1, a free port) until the block ends."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []  # tracebacks of requests the stand-in itself failed on
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake hub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------------ what tests read
    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        try:
            return self.repos[(repo_type, repo_id)]
        except KeyError:
            raise FakeHubError(404, f"Repository {repo_type} {repo_id} not found", "RepoNotFound") from None

    def snapshot_dir(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> Path:
        """The folder holding the files of `revision` (a branch name or a commit id)."""
        repo = self.repo(repo_id, repo_type)
        commit = self._resolve_revision(repo, revision)
        return self._commit_dir(repo, commit)

    def list_files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[str]:
        folder = self.snapshot_dir(repo_id, repo_type, revision)
        return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())

    def read_file(self, repo_id: str, path: str, repo_type: str = "model", revision: str = "main") -> bytes:
        return (self.snapshot_dir(repo_id, repo_type, revision) / path).read_bytes()

    # ------------------------------------------------------------------ storage
    def _commit_dir(self, repo: FakeRepo, commit: str) -> Path:
        return self.root / f"{repo.repo_type}s" / repo.repo_id / commit

    def _resolve_revision(self, repo: FakeRepo, revision: str) -> str:
        revision = unquote(revision)
        if revision in repo.branches:
            return repo.branches[revision]
        if re.fullmatch(r"[0-9a-f]{40}", revision) and self._commit_dir(repo, revision).is_dir():
            return revision
        raise FakeHubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _create_repo(self, repo_type: str, repo_id: str, private: bool) -> bool:
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                return False
            repo = FakeRepo(repo_type=repo_type, repo_id=repo_id, private=private)
            self.repos[(repo_type, repo_id)] = repo
            self._commit_dir(repo, EMPTY_COMMIT).mkdir(parents=True, exist_ok=True)
            return True

    def _commit(self, repo: FakeRepo, branch: str, operations: list[dict], summary: str) -> str:
        """Apply operations on top of the branch head into a new snapshot folder; returns the new commit id."""
        with self._lock:
            if branch not in repo.branches:
                raise FakeHubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            parent = repo.branches[branch]
            digest = hashlib.sha1(f"{repo.repo_id}\0{parent}\0{summary}".encode())
            for operation in operations:
                digest.update(f"{operation['kind']}\0{operation['path']}\0".encode())
                digest.update(operation.get("content", b""))
            commit = digest.hexdigest()
            staging = self._commit_dir(repo, commit + ".tmp")
            shutil.copytree(self._commit_dir(repo, parent), staging)
            for operation in operations:
                path = staging / operation["path"]
                if operation["kind"] == "file":
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(operation["content"])
                elif operation["kind"] == "deletedFile":
                    path.unlink(missing_ok=True)
                elif operation["kind"] == "deletedFolder":
                    shutil.rmtree(path, ignore_errors=True)
            staging.rename(self._commit_dir(repo, commit))
            repo.branches[branch] = commit
            repo.commit_messages[commit] = summary
            return commit


def _entry(folder: Path, path: Path) -> dict:
    relative = path.relative_to(folder).as_posix()
    if path.is_dir():
        return {"type": "directory", "oid": hashlib.sha1(relative.encode()).hexdigest(), "size": 0, "path": relative}
    content = path.read_bytes()
    return {"type": "file", "oid": git_blob_oid(content), "size": len(content), "path": relative}


class _Handler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # noqa: A002 - silence the default stderr access log
        pass

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, payload, status: int = 200, headers: dict[str, str] | None = None):
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        self._send(status, body, headers, head=self.command == "HEAD")

    def _body(self) -> bytes:
        return self._request_body

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        segments = [unquote(segment) for segment in split.path.strip("/").split("/")]
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        self._request_body = self.rfile.read(length) if length else b""  # always consumed: keeps keep-alive in sync
        status = 500
        try:
            status = self._route(method, segments, query) or 200
        except FakeHubError as error:
            status = error.status
            headers = {"X-Error-Code": error.error_code} if error.error_code else {}
            headers["X-Error-Message"] = error.message
            self._json({"error": error.message}, status=error.status, headers=headers)
        except Exception as error:  # noqa: BLE001 - a bug in the stand-in: answer (no client retries) and record it
            status = 400  # not 5xx: huggingface_hub retries those with backoff, which would only slow the test down
            self.fake_hub.errors.append(f"{method} {split.path}: {traceback.format_exc()}")
            self._json({"error": f"fake hub error: {error!r}"}, status=status)
        finally:
            self.fake_hub.requests.append(
                RecordedRequest(method, split.path, status, self.headers.get("Authorization"))
            )

    def do_GET(self):  # noqa: N802 - http.server naming
        self._dispatch("GET")

    def do_HEAD(self):  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    # ------------------------------------------------------------------ routes
    def _route(self, method: str, segments: list[str], query: dict[str, str]) -> int | None:
        hub = self.fake_hub
        if segments[:1] == ["api"]:
            if segments[1:3] == ["repos", "create"] and method == "POST":
                return self._create_repo(json.loads(self._body() or b"{}"))
            if segments[1:] == ["validate-yaml"] and method == "POST":
                self._body()
                self._json({"errors": [], "warnings": []})
                return 200
            if len(segments) >= 4 and segments[1].rstrip("s") in REPO_TYPES:
                repo_type = segments[1][:-1]
                repo = hub.repo(f"{segments[2]}/{segments[3]}", repo_type)
                action, rest = (segments[4], segments[5:]) if len(segments) > 4 else ("revision", ["main"])
                return self._api(method, repo, action, rest, query)
            raise FakeHubError(404, f"no such API route: {'/'.join(segments)}")
        # resolve URLs: /{org}/{name}/resolve/{rev}/{path} or /{type}s/{org}/{name}/resolve/{rev}/{path}
        repo_type = "model"
        if segments and segments[0] in ("datasets", "spaces"):
            repo_type, segments = segments[0][:-1], segments[1:]
        if len(segments) >= 5 and segments[2] == "resolve" and method in ("GET", "HEAD"):
            repo = hub.repo(f"{segments[0]}/{segments[1]}", repo_type)
            return self._resolve(repo, segments[3], "/".join(segments[4:]), head=method == "HEAD")
        raise FakeHubError(404, f"no such route: {'/'.join(segments)}")

    def _repo_url(self, repo: FakeRepo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.fake_hub.endpoint}/{prefix}{repo.repo_id}"

    def _create_repo(self, payload: dict) -> int:
        repo_type = payload.get("type") or "model"
        name, organization = payload.get("name"), payload.get("organization")
        if not name or not organization:
            raise FakeHubError(400, "the fake hub needs 'organization/name' repo ids")
        repo_id = f"{organization}/{name}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        created = self.fake_hub._create_repo(repo_type, repo_id, private)
        url = self._repo_url(self.fake_hub.repo(repo_id, repo_type))
        if not created:
            self._json({"error": "You already created this repo", "url": url}, status=409)
            return 409
        self._json({"url": url, "name": repo_id, "id": repo_id})
        return 200

    def _api(self, method: str, repo: FakeRepo, action: str, rest: list[str], query: dict[str, str]) -> int:
        hub = self.fake_hub
        if action == "branch" and method == "POST":
            branch = "/".join(rest)
            payload = json.loads(self._body() or b"{}")
            if branch in repo.branches:
                raise FakeHubError(409, f"Reference already exists: refs/heads/{branch}")
            start = hub._resolve_revision(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = start
            self._json({})
            return 200
        if action == "preupload" and method == "POST":
            payload = json.loads(self._body() or b"{}")
            hub._resolve_revision(repo, rest[0]) if rest else None
            files = [
                {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False}
                for item in payload.get("files", [])
            ]
            self._json({"files": files})
            return 200
        if action == "commit" and method == "POST":
            return self._commit(repo, "/".join(rest) or "main")
        if action == "revision" and method == "GET":
            return self._info(repo, "/".join(rest) or "main")
        if action == "tree" and method == "GET":
            return self._tree(repo, rest[0] if rest else "main", "/".join(rest[1:]), query)
        if action == "paths-info" and method == "POST":
            return self._paths_info(repo, rest[0] if rest else "main")
        raise FakeHubError(404, f"no such repo API route: {action}/{'/'.join(rest)}")

    def _commit(self, repo: FakeRepo, revision: str) -> int:
        operations, summary = [], ""
        for line in self._body().decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise FakeHubError(400, f"unsupported encoding {value.get('encoding')!r}")
                content = base64.b64decode(value["content"])
                operations.append({"kind": "file", "path": value["path"], "content": content})
            elif key in ("deletedFile", "deletedFolder"):
                operations.append({"kind": key, "path": value["path"]})
            else:
                raise FakeHubError(400, f"the fake hub only accepts regular uploads, got {key!r}")
        commit = self.fake_hub._commit(repo, revision, operations, summary)
        self._json({"commitUrl": f"{self._repo_url(repo)}/commit/{commit}", "commitOid": commit})
        return 200

    def _info(self, repo: FakeRepo, revision: str) -> int:
        commit = self.fake_hub._resolve_revision(repo, revision)
        folder = self.fake_hub._commit_dir(repo, commit)
        siblings = [
            {"rfilename": path.relative_to(folder).as_posix()} for path in sorted(folder.rglob("*")) if path.is_file()
        ]
        self._json(
            {
                "id": repo.repo_id,
                "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                "sha": commit,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "lastModified": "2025-01-01T00:00:00.000Z",
                "createdAt": "2025-01-01T00:00:00.000Z",
            }
        )
        return 200

    def _tree(self, repo: FakeRepo, revision: str, path: str, query: dict[str, str]) -> int:
        folder = self.fake_hub._commit_dir(repo, self.fake_hub._resolve_revision(repo, revision))
        base = folder / path if path else folder
        if not base.is_dir():
            raise FakeHubError(404, f"{path}: no such folder", "EntryNotFound")
        recursive = query.get("recursive", "false").lower() in ("1", "true")
        children = sorted(base.rglob("*") if recursive else base.iterdir())
        self._json([_entry(folder, child) for child in children])
        return 200

    def _paths_info(self, repo: FakeRepo, revision: str) -> int:
        folder = self.fake_hub._commit_dir(repo, self.fake_hub._resolve_revision(repo, revision))
        body = self._body().decode()
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            paths = json.loads(body).get("paths", [])
        else:
            paths = parse_qs(body).get("paths", [])
        entries = [_entry(folder, folder / path) for path in paths if (folder / path).exists()]
        self._json(entries)
        return 200

    def _resolve(self, repo: FakeRepo, revision: str, path: str, head: bool) -> int:
        commit = self.fake_hub._resolve_revision(repo, revision)
        file_path = self.fake_hub._commit_dir(repo, commit) / path
        if not file_path.is_file():
            raise FakeHubError(404, f"Entry not found: {path}", "EntryNotFound")
        content = file_path.read_bytes()
        headers = {
            "ETag": f'"{git_blob_oid(content)}"',
            "X-Repo-Commit": commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(file_path.name)}",
        }
        status, body = 200, content
        byte_range = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if byte_range and not head:
            first, last = byte_range.groups()
            if first == "":  # suffix range: the last N bytes
                start, end = max(len(content) - int(last), 0), len(content) - 1
            else:
                start, end = int(first), min(int(last) if last else len(content) - 1, len(content) - 1)
            status, body = 206, content[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        headers["Content-Length"] = str(len(body))
        self._send(status, body, headers, head=head)
        return status
