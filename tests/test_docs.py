"""README.md and the documentation site stay true.

* README's set-up commands are CI's; its model table (and the Models page's) is the catalogue.
* The tables, charts and figures the code owns are generated from it and current (docs/make_*.py --check).
* Every code block of README and of every page is run (README's quickstart, the Inference page's examples) or at
  least syntax-checked (Python: ``compile``; shell: ``bash -n``).
* Every public name, ``resnest_zoo.training`` and every submodule function a page points to is in the API
  reference; every error class is explained on Troubleshooting; every page is in the site's navigation.

The site itself is built by ``mkdocs build --strict`` in CI (.ci/run), not here.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml
from PIL import Image

import resnest_zoo
from resnest_zoo.catalogue import catalogue, get_entry

from conftest import REPO_ROOT
from http_server import FileServer

DOCS = REPO_ROOT / "docs"
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
PAGES = {path.relative_to(DOCS).as_posix(): path.read_text(encoding="utf-8") for path in sorted(DOCS.rglob("*.md"))}
PHOTO = REPO_ROOT / "tests" / "data" / "chelsea_160x106.png"


def page(name: str) -> str:
    return PAGES[name]


def section(text: str, title: str, level: int = 2) -> str:
    hashes = "#" * level
    match = re.search(rf"^{hashes} {re.escape(title)}\n(.*?)(?=^#{{1,{level}}} |\Z)", text, flags=re.M | re.S)
    assert match, f"no '{hashes} {title}' section"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def script(name: str) -> ModuleType:
    """One of the docs' scripts (docs/make_*.py), imported from its file."""
    spec = importlib.util.spec_from_file_location(f"docs_{name}", DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# --- README and CI -------------------------------------------------------------------------------------------

def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 260
    for link in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (REPO_ROOT / link).exists(), link


def test_setup_commands_are_the_ones_ci_runs():
    commands = code_blocks(section(README, "Set up"), "bash")[0].strip().splitlines()
    assert commands == ['pip install -e ".[test]"', "python -m pytest", "mkdocs build --strict"]
    ci = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert [line for line in ci if line in commands] == commands


@pytest.mark.parametrize("text", [README, PAGES["models.md"]], ids=["README", "models.md"])
def test_model_table_is_the_catalogue(text):
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in section(text, "Models", level=2 if text is README else 1).splitlines()
            if line.startswith("| ") and not line.startswith(("| Segmentor", "| :", "| Name", "| `"))]
    expected = []
    for e in catalogue().values():
        s = e.schedule
        expected.append([
            e.segmentor, e.dataset, str(e.num_classes), "x".join(map(str, e.crop_size)),
            f"{s['lr']} / {s['policy']} / {s['batch_size']} / {s['epochs']}", f"{e.train_set} / {e.eval_set}",
            f"{e.miou:.2f}", "x".join(map(str, e.preprocessing.resize)),
        ])
    assert rows == expected


# --- generated tables, charts, figures -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["make_tables", "make_diagrams", "make_charts"])
def test_generated_parts_are_current(name, capsys):
    assert script(name).main(["--check"]) == 0, capsys.readouterr().err


def test_exit_code_table_is_the_commands_own():
    """The Command line page's exit codes are cli/exit_codes.py's table (which --help prints too), row for row."""
    from resnest_zoo.cli.exit_codes import MEANINGS, ExitCode

    rows = [tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
            for line in page("cli.md").splitlines() if re.match(r"^\| `\d+` \|", line)]
    assert rows == [(f"`{int(code)}`", MEANINGS[code]) for code in ExitCode]


def test_command_line_page_names_every_option_of_predict_and_list():
    from resnest_zoo.cli import build_parser

    text = page("cli.md")
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name in ("predict", "list"):
        for action in commands[name]._actions:
            if action.option_strings and action.dest not in ("help", "cache_dir", "quiet", "alpha"):
                assert any(flag in text for flag in action.option_strings), (name, action.option_strings)
    for name in commands:
        assert f"`resnest-zoo {name}`" in text


def test_environment_table_lists_every_variable():
    from resnest_zoo.environment import VARIABLES

    text = section(page("downloads.md"), "Environment variables")
    for variable in VARIABLES:
        assert f"| `{variable.name}` | {variable.meaning} |" in text


def test_runtime_metadata_table_lists_every_key():
    from resnest_zoo.formats.runtime import METADATA_KEYS

    table = section(page("deployment.md"), "What the file says")
    for key in METADATA_KEYS:
        assert f"`{key}`" in table, key


def test_layer_figure_has_every_module_once():
    diagrams = script("make_diagrams")
    placed = [name.rstrip("/").removesuffix(".py") for row in diagrams.layers() for name in row]
    package = REPO_ROOT / "resnest_zoo"
    expected = {p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    expected |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    assert sorted(placed) == sorted(expected)
    svg = (DOCS / "images" / "layers.svg").read_text()
    assert all(f">{name}<" in svg for row in diagrams.layers() for name in row)
    assert "images/layers.svg" in page("development.md")
    assert "images/batch_pipeline.svg" in page("batch-prediction.md")


def test_a_layer_cycle_is_refused():
    diagrams = script("make_diagrams")
    assert diagrams.layers({"a": {"b"}, "b": set()}) == [["b.py"], ["a.py"]]
    with pytest.raises(SystemExit, match="import cycle: a -> b -> a"):
        diagrams.layers({"a": {"b"}, "b": {"a"}})


# --- charts --------------------------------------------------------------------------------------------------

def _svg_texts(svg: str) -> str:
    return " ".join(re.findall(r"<text[^>]*>(.*?)</text>", svg, flags=re.S))


def _drawn_values(name: str, report: dict) -> list[float]:
    """The figures each kind of report's chart must show, read from the report independently of the script."""
    if name == "inference":
        return [row["median_s"] for case in report["cases"] for row in case["variants"]]
    if name == "loading":
        return [row["seconds"] for row in report["summary"]]
    if name == "batch_predict":
        return [row[k] for row in report["throughput"] for k in ("loop_images_per_s", "forward_images_per_s",
                                                                  "forward_and_resize_back_images_per_s",
                                                                  "stream_images_per_s")]
    if name == "evaluate":
        row = report["throughput"]
        return [row["forward_alone_images_per_s"], row["forward_and_resize_back_images_per_s"],
                row["evaluate_images_per_s"]]
    if name == "serve":
        levels = report["server"] + report["server_max_batch_size_1"]
        return ([report["offline_images_per_s"]] + [row["throughput_per_s"] for row in levels]
                + [row["p99_s"] for row in levels] + [row["p99_bound_s"] for row in levels])
    raise AssertionError(f"no chart is known for bench_{name}.json")


def _check_chart(report_path: Path, svg: str) -> None:
    import json

    name = report_path.stem.removeprefix("bench_")
    texts = _svg_texts(svg)
    for value in _drawn_values(name, json.loads(report_path.read_text())):
        assert f"{value:.3g}" in texts, (report_path.name, value)
    assert "flags " in texts and "precision" in texts, texts[:300]


def test_every_chart_shows_its_values_and_is_on_the_performance_page():
    charts = script("make_charts")
    reports = charts.reports()
    assert reports, "no benchmark report under docs/data/"
    for report in reports:
        target = charts.chart_path(report)
        _check_chart(report, target.read_text(encoding="utf-8"))
        assert f"images/charts/{target.name}" in page("performance.md")
        assert report.parent.name in target.name


def test_an_inference_report_is_drawn_with_its_machine(tmp_path):
    """bench_inference.py's report format (what the INT8 work keeps under docs/data/), drawn from a small one."""
    import json

    charts = script("make_charts")
    variants = [{"variant": name, "dtype": dtype, "backend": backend, "reference": name == "reference",
                 "median_s": seconds, "vs_ref": 5.0 / seconds, "percent_of_peak": 50.0}
                for name, dtype, backend, seconds in [("reference", "float32", "torch", 5.0),
                                                      ("folded_channels_last", "float32", "torch", 4.1234),
                                                      ("openvino_bf16", "bfloat16", "openvino", 0.987),
                                                      ("openvino_int8", "int8", "openvino", 0.4321)]]
    report = {"command": "bench_inference.py --quick",
              "machine": {"cpu_model": "Test CPU", "cpus": 2, "cpu_flags": ["avx2", "avx512f", "avx512_bf16"],
                          "cpu_capability": "AVX512", "native": {"float32": True, "bfloat16": True},
                          "torch": "2.x", "load_average_before": [0.5, 0, 0], "load_average_after": [1.5, 0, 0]},
              "cases": [{"segmentor": "deeplabv3plus", "batch": 1, "height": 512, "width": 512,
                         "gflop_per_forward": 523.0, "variants": variants}]}
    path = tmp_path / "test-machine" / "bench_inference.json"
    path.parent.mkdir()
    path.write_text(json.dumps(report))
    svg = charts.render(charts.chart(path))
    _check_chart(path, svg)
    texts = _svg_texts(svg)
    assert "Test CPU" in texts and "avx512_bf16" in texts and "(no AMX)" in texts and "bfloat16 (native)" in texts
    assert "openvino_int8 (int8, openvino)" in texts and "int8 (emulated)" not in texts
    assert "load average 0.50 before, 1.50 after" in texts

    (tmp_path / "test-machine" / "bench_other.json").write_text("{}")
    with pytest.raises(SystemExit, match="no chart is known for bench_other.json"):
        charts.chart(tmp_path / "test-machine" / "bench_other.json")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "bench_loading.json").write_text(json.dumps({"summary": [], "machine": {}}))
    with pytest.raises(SystemExit, match="no machine.json"):
        charts.chart(tmp_path / "bare" / "bench_loading.json")


# --- the API reference, troubleshooting, navigation --------------------------------------------------------------

def _directives() -> dict[str, list[str] | None]:
    """``::: target`` of the reference pages -> its ``members`` option (None: all public members)."""
    found: dict[str, list[str] | None] = {}
    for name, text in PAGES.items():
        if not name.startswith("reference/"):
            continue
        for target, options in re.findall(r"^::: (\S+)\n((?:[ ]{4}.*\n)*)", text, flags=re.M):
            parsed = yaml.safe_load("\n".join(line[4:] for line in options.splitlines())) or {}
            found[target] = (parsed.get("options") or {}).get("members")
    return found


def _resolve(target: str) -> object:
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            value = getattr(value, attribute)
        return value
    raise AssertionError(f"{target} does not resolve")


def _public(module: ModuleType) -> set[str]:
    return set(getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")]))


def _documented(path: str, directives: dict[str, list[str] | None]) -> bool:
    if path in directives:
        return True
    parent, _, name = path.rpartition(".")
    if parent in directives:
        members = directives[parent]
        return name in members if members is not None else name in _public(importlib.import_module(parent))
    return False


def test_every_reference_directive_resolves():
    for target in _directives():
        _resolve(target)


def test_the_reference_documents_every_public_name():
    directives = _directives()
    missing = [name for name in resnest_zoo.__all__ if name != "__version__"
               and not _documented(f"resnest_zoo.{name}", directives)
               and not _documented(f"resnest_zoo.errors.{name}", directives)]
    assert not missing, f"not in the API reference: {missing}"
    import resnest_zoo.training as training

    assert "resnest_zoo.training" in directives
    assert all(_documented(f"resnest_zoo.training.{name}", directives) for name in training.__all__)


def test_the_reference_documents_what_the_pages_point_to():
    """``resnest_zoo.module.function`` named on a guide page (or README) is in the reference."""
    directives = _directives()
    texts = [README] + [text for name, text in PAGES.items() if not name.startswith("reference/")]
    pointed = {m for text in texts for m in re.findall(r"`(resnest_zoo(?:\.[a-z_]+)+\.[A-Za-z_]\w*)", text)}
    missing = []
    for path in sorted(pointed):
        value = _resolve(path)
        if isinstance(value, ModuleType) or path.count(".") == 1:
            continue  # a module (its page says what it is), or a public name (checked above)
        if not _documented(path, directives):
            missing.append(path)
    assert pointed and not missing, f"pointed to by the docs but not in the API reference: {missing}"


def test_every_error_class_is_explained():
    from resnest_zoo import errors

    text = page("troubleshooting.md")
    for name in errors.__all__:
        explanation = section(text, f"`{name}`", level=3)
        assert len(explanation.split()) >= 20, name
        assert name == "ResNeStZooError" or "**What to do:**" in explanation, name
        assert f"[`{name}`](#{name.lower()})" in text  # in the summary table


def test_navigation_lists_every_page():
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())

    def files(entries) -> list[str]:
        out = []
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            out += files(value) if isinstance(value, list) else [value]
        return out

    assert sorted(files(config["nav"])) == sorted(PAGES)


# --- code blocks ---------------------------------------------------------------------------------------------

DOCUMENTS = {"README.md": README, **{f"docs/{name}": text for name, text in PAGES.items()}}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_code_blocks_are_valid(name):
    text = DOCUMENTS[name]
    for number, block in enumerate(code_blocks(text, "python")):
        compile(block, f"{name}, python block {number + 1}", "exec")
    for number, block in enumerate(code_blocks(text, "bash")):
        done = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert done.returncode == 0, f"{name}, bash block {number + 1}: {done.stderr}"


def test_getting_started_repeats_the_readme_quickstart():
    """The Getting started page shows README's quickstart, which the tests below run."""
    readme = code_blocks(section(README, "Quickstart"), "python") + code_blocks(section(README, "Quickstart"), "bash")
    index = section(page("index.md"), "Quickstart")
    assert readme and all(block in index for block in readme)


@pytest.fixture(scope="module")
def served(published_checkpoint):
    """A local HTTP server holding full-size random checkpoints under their published names."""
    with FileServer() as server:
        for key in (("deeplabv3plus", "ade20k"), ("fcn", "voc")):
            path, _ = published_checkpoint(*key)
            server.add(f"assets/{get_entry(*key).filename}", path)
        yield server


def _environment(server: FileServer, cache: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("RESNEST_ZOO_", "HF_HUB_OFFLINE"))}
    environment.update({"RESNEST_ZOO_MIRROR": server.url("assets"), "RESNEST_ZOO_CACHE": str(cache),
                        "RESNEST_ZOO_RETRIES": "0", "NO_PROXY": "127.0.0.1", "CUDA_VISIBLE_DEVICES": "",
                        "RESNEST_ZOO_GITHUB_API": server.url("github-api")})  # never the real GitHub API
    return environment


def _street(folder: Path) -> Image.Image:
    photo = Image.open(PHOTO).convert("RGB")
    photo.save(folder / "street.jpg", quality=95)
    return photo


def _run_python(code: str, server: FileServer, folder: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True,
                          env=_environment(server, folder / "cache"), timeout=600)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_python_quickstart_runs_as_written(served, tmp_path):
    python = code_blocks(section(README, "Quickstart"), "python")[0]
    photo = _street(tmp_path)
    done = _run_python(python, served, tmp_path)
    mask = Image.open(tmp_path / "street_mask.png")
    assert mask.mode == "P" and mask.size == photo.size
    assert int(np.asarray(mask).max()) < 150
    assert f"{photo.height}x{photo.width}" in done.stdout or f"{photo.width}x{photo.height}" in done.stdout
    names = get_entry("deeplabv3plus", "ade20k").class_names
    commonest = np.bincount(np.asarray(mask).reshape(-1)).argmax()
    assert names[commonest].split(",")[0] in done.stdout  # the printed summary names the classes present
    assert served.bytes_served(f"assets/{get_entry('deeplabv3plus', 'ade20k').filename}") > 0


@pytest.mark.slow
def test_inference_examples_run_as_written(served, tmp_path):
    (examples,) = code_blocks(page("inference.md"), "python")
    _street(tmp_path)
    # the block as written, on a model whose test-time resize is shrunk (256x128 instead of 2048x512) to keep
    # the eight forward passes it makes quick on a CPU
    setup = ("import dataclasses, resnest_zoo\nmodel = resnest_zoo.load('fcn', 'voc')\n"
             "model.config = dataclasses.replace(model.config, preprocessing=dataclasses.replace("
             "model.config.preprocessing, resize=(256, 128)))\n")
    code = (setup + examples +
            "\nassert len(predictions) == 2 and (predictions[0].labels == predictions[1].labels).all()"
            "\nassert tiled.labels.shape == augmented.labels.shape == predictions[0].labels.shape\nprint('OK')\n")
    assert "OK" in _run_python(code, served, tmp_path).stdout


@pytest.mark.slow
def test_torch_hub_quickstart_runs_as_written(served, tmp_path):
    hub = code_blocks(section(README, "Quickstart"), "python")[1]
    assert "/path/to/resnest_zoo" in hub
    code = hub.replace("/path/to/resnest_zoo", str(REPO_ROOT)) + (
        "\nprint('HUB', type(model).__name__, model.num_classes, model.training, "
        "sorted({p.device.type for p in model.parameters()}))\n")
    done = _run_python(code, served, tmp_path)
    assert "HUB DeepLabV3Plus 150 False ['cpu']" in done.stdout


@pytest.mark.slow
def test_shell_quickstart_runs_as_written(served, tmp_path):
    (commands,) = code_blocks(section(README, "Quickstart"), "bash")
    photo = _street(tmp_path)
    (tmp_path / "photos").mkdir()
    photo.resize((80, 53)).save(tmp_path / "photos" / "small.png")
    environment = _environment(served, tmp_path / "cache")
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, capture_output=True,
                          text=True, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "deeplabv3plus/cityscapes" in done.stdout
    assert Image.open(tmp_path / "masks" / "street.png").size == photo.size
    assert Image.open(tmp_path / "masks" / "small_overlay.png").size == (80, 53)
