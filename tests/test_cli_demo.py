import json
import subprocess
import sys

from cpixelcnn.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--max-steps", "3"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 3
    assert 0.0 <= report["accuracy"] <= 1.0
    assert 0 < report["test_bpd"] < 9.5
    assert 0.0 <= report["sample_accuracy"] <= 1.0 and report["samples_per_class"] >= 8
    assert (out / "samples.png").stat().st_size > 0 and (out / "run" / "checkpoint.safetensors").is_file()
    assert report["data"] == "digits" and len(report["classes"]) == 10 and report["image_size"] == 8
    assert main(["demo", "--out", str(out), "--max-steps", "1", "--data", "demo", "--samples-per-class", "2"]) == 0  # again over its own folder
    report = json.loads((out / "report.json").read_text())
    assert report["data"] == "demo" and report["samples_per_class"] == 2 and report["classes"][0] == "stripes"
    assert not list(out.glob(".*.tmp")), "no temp files left behind"
    printed = capsys.readouterr().out
    assert "Bayes classifier" in printed and "sample accuracy" in printed


def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cpixelcnn", "demo", "--out", str(tmp_path), "--seconds", "0"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("cpixelcnn: error:") and "seconds must be a positive training time" in proc.stderr
