"""``shardlease fencing``: the manifests a GitOps user commits, and the refusals that must be loud: a
server that cannot enforce the policies (the dev-server) and bad flags."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from shardlease.cli import main


def test_dry_run_prints_the_manifests_as_yaml_without_a_cluster(capsys: Any) -> None:
    code = main(["fencing", "install", "--group", "cm", "--namespace", "team-a", "--resource", "apps/v1/deployments",
                 "--shards", "4", "--dry-run", "-o", "yaml", "--kubeconfig", "/nonexistent"])
    assert code == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs].count("ValidatingAdmissionPolicyBinding") == 6  # anchor, guard, 4 shards
    assert {d["spec"]["paramRef"]["name"] for d in docs[4:] if "paramRef" in d.get("spec", {})} == \
        {f"cm-shard-{i}" for i in range(4)}


def test_install_on_the_dev_server_says_it_cannot_enforce_it(kubeconfig: str, capsys: Any) -> None:
    code = main(["fencing", "install", "--group", "cm", "--resource", "v1/configmaps", "--shards", "2",
                 "--kubeconfig", kubeconfig])
    err = capsys.readouterr().err
    assert code == 1
    assert "does not serve ValidatingAdmissionPolicy" in err and "nothing was installed" in err
    assert "dev-server" in err and "--kube-assets" in err


@pytest.mark.parametrize(("flags", "words"), [
    (["--resource", "configmaps"], "--resource must be [GROUP/]VERSION/RESOURCE"),
    (["--resource", "v1/configmaps", "--shards", "0"], "--shards must be an integer in 1..65536"),
    (["--resource", "v1/configmaps", "--namespace", "Bad NS"], "namespace"),
])
def test_bad_flags_exit_2_naming_the_flag(flags: list[str], words: str, capsys: Any) -> None:
    assert main(["fencing", "install", "--group", "cm", "--dry-run", *flags]) == 2
    assert words in capsys.readouterr().err


def test_install_without_shards_needs_the_group_lease(kubeconfig: str, capsys: Any) -> None:
    # On the dev-server the policy API is missing; the group Lease check comes first and names --shards.
    assert main(["fencing", "install", "--group", "nogroup", "--resource", "v1/configmaps",
                 "--kubeconfig", kubeconfig]) == 2
    assert "pass --shards N" in capsys.readouterr().err
