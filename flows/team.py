"""Team mode on one machine: the shared services a team runs, started and stopped together.

    python -m flows.team up   [--dir .team]   # PostgreSQL, MLflow server, Prefect server, worker
    python -m flows.team down [--dir .team]   # stop them all; no process or port left behind
    python -m flows.team status [--dir .team]
    source .team/env                          # MLFLOW_TRACKING_URI, PREFECT_API_URL, DVC remote

What `up` starts, each a process of its own (logs in <dir>/logs/, state in <dir>/state.json):
  * a PostgreSQL 15 cluster (initdb in <dir>/postgres, trust auth, 127.0.0.1 only) with the
    database `mlflow`: MLflow's tracking store and model registry. PostgreSQL refuses to run as
    root: as root it runs as the `postgres` account, and its cluster lives in
    /tmp/stdformer-team-<hash>/ when that account cannot reach <dir>;
  * `mlflow server` on it, serving artifacts from <dir>/mlartifacts (clients write and read
    models through the server: no path of one checkout is recorded in the registry);
  * `prefect server start` (its own PREFECT_HOME, <dir>/prefect-server, SQLite);
  * the process work pool `team` and one `prefect worker start --pool team`: it runs the
    scheduled retrain deployments (`python -m flows.deploy --work-pool team`) of any clone;
  * a directory <dir>/dvc-remote for `dvc remote add -d team <dir>/dvc-remote`.
Ports are free ones picked at the first `up` and kept. `up` is idempotent (services already
running are left alone); `down` stops what `up` started, in reverse order. docs/team-mode.md
describes the same on real hosts.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stdformer.io import DataError, write_text_atomic

DEFAULT_DIR = ".team"
WORK_POOL = "team"
DATABASE, DB_USER = "mlflow", "mlflow"
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
               "/usr/lib/postgresql/17/bin")
START_TIMEOUT_S = 180.0   # mlflow and prefect servers take 15-30 s on 2 busy cores
STOP_TIMEOUT_S = 20.0
HOST = "127.0.0.1"


@dataclass
class TeamState:
    """What `up` started: ports, process ids (each the leader of its own process group)."""

    pg_port: int = 0
    mlflow_port: int = 0
    prefect_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)   # service -> pid (not postgres)

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}/api"

    @property
    def database_uri(self) -> str:
        return f"postgresql://{DB_USER}@{HOST}:{self.pg_port}/{DATABASE}"


def postgres_bin() -> Path | None:
    """The directory of initdb / pg_ctl / postgres: on PATH, else Debian's versioned ones."""
    found = shutil.which("pg_ctl")
    if found:   # Debian links some of them into /usr/local/bin: the real directory has all
        return Path(found).resolve().parent
    return next((Path(d) for d in PG_BIN_DIRS if (Path(d) / "pg_ctl").is_file()), None)


def postgres_user() -> str | None:
    """Who runs PostgreSQL: this user, or, as root (which PostgreSQL refuses), the system's
    `postgres` account (else `nobody`)."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    raise DataError("PostgreSQL", "running as root, and there is no `postgres` or `nobody` "
                    "account to run the server as")


def _reachable_by_others(directory: Path) -> bool:
    """Can another user traverse every directory down to `directory`?"""
    return all(p.stat().st_mode & 0o001 for p in [*directory.parents, directory] if p.exists())


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


class Team:
    """The services of one state directory."""

    def __init__(self, directory: str | Path = DEFAULT_DIR, log=print):
        self.dir = Path(directory).resolve()
        self.log = log
        self.state_file = self.dir / "state.json"
        self.pg_data = self.dir / "postgres"
        if postgres_user() is not None and not _reachable_by_others(self.dir):
            # as root: the server's own user must reach its data directory
            tag = hashlib.sha1(str(self.dir).encode()).hexdigest()[:12]
            self.pg_data = Path(tempfile.gettempdir()) / f"stdformer-team-{tag}" / "postgres"
        self.logs = self.dir / "logs"

    # ---- state ----------------------------------------------------------------------------

    def load(self) -> TeamState:
        if not self.state_file.is_file():
            return TeamState()
        try:
            return TeamState(**json.loads(self.state_file.read_text()))
        except (ValueError, TypeError) as e:
            raise DataError(self.state_file, f"unreadable team state ({e}); run "
                            "`python -m flows.team down` after stopping the services by hand, "
                            "or remove the file") from e

    def save(self, state: TeamState) -> None:
        write_text_atomic(self.state_file, json.dumps(asdict(state), indent=2) + "\n")

    def env_exports(self, state: TeamState) -> dict[str, str]:
        """What a shell on this machine exports to use the services (also <dir>/env)."""
        return {"MLFLOW_TRACKING_URI": state.tracking_uri,
                "PREFECT_API_URL": state.prefect_api_url,
                "STDFORMER_DVC_REMOTE": str(self.dir / "dvc-remote"),
                "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DVC_NO_ANALYTICS": "1"}

    # ---- up -------------------------------------------------------------------------------

    def up(self) -> TeamState:
        pg = postgres_bin()
        if pg is None:
            raise DataError("PostgreSQL", "no initdb/pg_ctl found (on PATH or in "
                            f"{', '.join(PG_BIN_DIRS)}); install postgresql (Debian: "
                            "apt-get install postgresql) or put its bin directory on PATH")
        state = self.load()
        for sub in ("logs", "mlartifacts", "dvc-remote", "prefect-server", "prefect-worker"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for name in ("pg_port", "mlflow_port", "prefect_port"):
            if not getattr(state, name):
                setattr(state, name, free_port())
        self.save(state)
        self._start_postgres(pg, state)
        self._start_server(state, "mlflow", self._mlflow_command(state),
                           f"{state.tracking_uri}/health", env=self._base_env(state))
        self._start_server(state, "prefect-server",
                           [sys.executable, "-m", "prefect", "server", "start", "--host", HOST,
                            "--port", str(state.prefect_port)],
                           f"{state.prefect_api_url}/health",
                           env={**self._base_env(state),
                                "PREFECT_HOME": str(self.dir / "prefect-server")})
        worker_env = {**self._base_env(state), "PREFECT_HOME": str(self.dir / "prefect-worker")}
        self._run([sys.executable, "-m", "prefect", "work-pool", "create", WORK_POOL,
                   "--type", "process", "--overwrite"], worker_env, "work pool")
        self._start_server(state, "worker",
                           [sys.executable, "-m", "prefect", "worker", "start", "--pool",
                            WORK_POOL, "--type", "process", "--name", f"{socket.gethostname()}"
                            f"-{state.prefect_port}"], None, env=worker_env)
        exports = self.env_exports(state)
        write_text_atomic(self.dir / "env", "".join(f"export {k}={v}\n"
                                                    for k, v in exports.items()))
        self.log(f"team services up: MLflow {state.tracking_uri} (PostgreSQL on port "
                 f"{state.pg_port}), Prefect {state.prefect_api_url}, worker on pool "
                 f"'{WORK_POOL}'; `source {self.dir / 'env'}`")
        return state

    def _base_env(self, state: TeamState) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env_exports(state))
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.pop("PREFECT_PROFILE", None)
        return env

    def _mlflow_command(self, state: TeamState) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", state.database_uri,
                "--serve-artifacts", "--artifacts-destination", str(self.dir / "mlartifacts"),
                "--host", HOST, "--port", str(state.mlflow_port), "--workers", "1"]

    def _run(self, cmd: list[str], env: dict[str, str], what: str, user: str | None = None
             ) -> str:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=self.dir,
                              user=user, group=user)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise DataError(what, f"`{' '.join(map(str, cmd[:3]))} ...` failed: "
                            + " / ".join(tail))
        return done.stdout

    def _start_postgres(self, pg: Path, state: TeamState) -> None:
        env = {**os.environ, "LC_ALL": "C"}
        user = postgres_user()
        run_dir = self.pg_data.parent / "run"   # socket and log: written by the server's user
        if user is not None:
            for path in sorted({self.pg_data.parent, run_dir, self.pg_data} - {self.dir}):
                path.mkdir(mode=0o700, exist_ok=True)
                shutil.chown(path, user, user)
        if not (self.pg_data / "PG_VERSION").is_file():
            self._run([str(pg / "initdb"), "-D", str(self.pg_data), "-U", DB_USER,
                       "--auth=trust", "-E", "UTF8", "--no-sync"], env, "initdb", user)
        if not self._postgres_running(pg):
            self._ensure_port_free(state.pg_port, "PostgreSQL")
            self._run([str(pg / "pg_ctl"), "-D", str(self.pg_data), "-l",
                       str(run_dir / "postgres.log"), "-w", "-t", "60", "-o",
                       f"-p {state.pg_port} -c listen_addresses={HOST} -k {run_dir}", "start"],
                      env, "PostgreSQL", user)
        exists = self._run([str(pg / "psql"), "-h", HOST, "-p", str(state.pg_port), "-U",
                            DB_USER, "-d", "postgres", "-tAc",
                            f"select 1 from pg_database where datname = '{DATABASE}'"],
                           env, "PostgreSQL")
        if exists.strip() != "1":
            self._run([str(pg / "createdb"), "-h", HOST, "-p", str(state.pg_port), "-U",
                       DB_USER, DATABASE], env, "createdb")

    def _ensure_port_free(self, port: int, what: str) -> None:
        if port_open(port):
            raise DataError(f"{what} port {port}", "already in use by another program; run "
                            f"`python -m flows.team down`, or remove {self.state_file} to pick "
                            "new ports")

    def _start_server(self, state: TeamState, name: str, cmd: list[str], health: str | None,
                      env: dict[str, str]) -> None:
        if state.pids.get(name) and _group_alive(state.pids[name]):
            self.log(f"{name}: already running (pid {state.pids[name]})")
            return
        port = {"mlflow": state.mlflow_port, "prefect-server": state.prefect_port}.get(name)
        if port:
            self._ensure_port_free(port, name)
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=self.dir,
                                    start_new_session=True)   # its own group: down stops all
        state.pids[name] = proc.pid
        self.save(state)
        deadline = time.monotonic() + START_TIMEOUT_S
        while health and not _answers(health):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DataError(name, f"did not start (see {self.logs / f'{name}.log'})")
            time.sleep(0.5)
        self.log(f"{name}: started (pid {proc.pid})")

    def _postgres_running(self, pg: Path) -> bool:
        return subprocess.run([str(pg / "pg_ctl"), "-D", str(self.pg_data), "status"],
                              capture_output=True, user=postgres_user(),
                              group=postgres_user()).returncode == 0

    def stop_postgres(self, pg: Path | None = None) -> None:
        """Stop the database alone (`pg_ctl stop -m fast`)."""
        pg = pg or postgres_bin()
        subprocess.run([str(pg / "pg_ctl"), "-D", str(self.pg_data), "-m", "fast", "-w",
                        "stop"], capture_output=True, user=postgres_user(), group=postgres_user())

    def start_postgres(self) -> None:
        """Start the database again after `stop_postgres` (same port and data)."""
        self._start_postgres(postgres_bin(), self.load())

    # ---- down -----------------------------------------------------------------------------

    def down(self) -> None:
        state = self.load()
        for name in ("worker", "prefect-server", "mlflow"):
            pid = state.pids.pop(name, None)
            if pid and _group_alive(pid):   # its leader may have exited, its children not
                stop_group(pid)
                self.log(f"{name}: stopped (pid {pid})")
        pg = postgres_bin()
        if pg is not None and (self.pg_data / "postmaster.pid").is_file():
            self.stop_postgres(pg)
            self.log("postgres: stopped")
        if self.state_file.is_file():
            self.save(state)
        busy = [p for p in (state.pg_port, state.mlflow_port, state.prefect_port)
                if p and port_open(p)]
        if busy:
            raise DataError("team down", f"ports still in use after stopping: {busy}")

    def status(self) -> dict[str, object]:
        state = self.load()
        return {"dir": str(self.dir), **{n: _group_alive(p) for n, p in state.pids.items()},
                "postgres": bool(state.pg_port) and port_open(state.pg_port),
                **self.env_exports(state)}


def stop_group(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group led by `pid`, SIGKILL what is left after `timeout_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _group_alive(pid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@contextlib.contextmanager
def team_services(directory: str | Path, log=print) -> Iterator[TeamState]:
    """The services up for a block, always down after it (tests, scripts)."""
    team = Team(directory, log=log)
    try:
        yield team.up()
    finally:
        team.down()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--dir", default=DEFAULT_DIR, help="state directory (default .team)")
    args = parser.parse_args(argv)
    team = Team(args.dir, log=lambda msg: print(msg, file=sys.stderr))
    try:
        if args.action == "up":
            try:
                team.up()
            except BaseException:
                team.down()   # nothing half-started stays behind
                raise
        elif args.action == "down":
            team.down()
        else:
            print(json.dumps(team.status(), indent=2))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


if __name__ == "__main__":
    main()
