"""docker-compose.yml: every adamscape command it runs or tells the user to type parses with the real CLI
(on main, `submit … --address auto` did not exist)."""

from __future__ import annotations

import re
import shlex

import typer.main
import yaml

from study.cli import app
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def _adamscape_commands() -> list[list[str]]:
    """The services' commands, and the comment lines that show a command to type."""
    text = COMPOSE.read_text()
    lines = [service.get("command", "") for service in yaml.safe_load(text)["services"].values()]
    lines += [line.strip().lstrip("#").strip() for line in text.splitlines() if line.lstrip().startswith("#")]
    found = []
    for line in lines:
        for match in re.finditer(r"(?:^|exec |&& |compose exec \S+ )adamscape ([^\"&]+)", line):
            found.append(shlex.split(match.group(1).split("  #")[0]))
    return found


def test_every_adamscape_command_in_the_compose_file_parses():
    cli = typer.main.get_command(app)
    commands = _adamscape_commands()
    names = {words[0] for words in commands}
    assert {"serve", "submit", "watch", "dashboard"} <= names, names
    for words in commands:
        sub = cli.commands[words[0]]
        args = [w if not w.startswith("FILE") else "study.toml" for w in words[1:]]
        sub.make_context(words[0], args)  # raises on an unknown option or a missing argument


def test_the_scheduler_runs_the_service_on_a_ray_node_and_gets_time_to_hand_leases_back():
    scheduler = yaml.safe_load(COMPOSE.read_text())["services"]["scheduler"]
    assert "ray start --address=ray-head:6379" in scheduler["command"]
    assert "exec adamscape serve" in scheduler["command"]  # SIGTERM reaches the service, not a shell
    assert int(scheduler["stop_grace_period"].rstrip("s")) > 10
