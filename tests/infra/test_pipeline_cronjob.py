"""The daily pipeline's CronJob runs the pipeline command, daily, never two at once, on the shared volume."""

from __future__ import annotations

import yaml

from recsys.settings import ROOT_DIR

CRONJOB = ROOT_DIR / "infra" / "deploy" / "k8s" / "pipeline-cronjob.yaml"


def test_the_cronjob_runs_the_daily_pipeline_once_a_day_one_at_a_time() -> None:
    (job,) = [d for d in yaml.safe_load_all(CRONJOB.read_text()) if d]
    assert job["kind"] == "CronJob" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    minute, hour, day, month, weekday = spec["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and (day, month, weekday) == ("*", "*", "*")
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["recsys", "--profile", "services", "pipeline", "run"]
    sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"recsys-settings", "recsys-credentials"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claims[next(iter(mounts))] == "recsys-lake"
    # The data dir the settings name is the mounted volume: the lock, manifests and models live there.
    settings = yaml.safe_load((CRONJOB.parent / "configmap.yaml").read_text().split("---")[0])
    assert settings["data"]["RECSYS_DATA_DIR"] == mounts["data"]
