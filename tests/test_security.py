"""Untrusted artifacts: models, checkpoints, study files and run directories run no foreign code.

- `trust_remote_code` is off unless the study sets it, and every loader passes the study's value on;
- checkpoints are safetensors: a trial's run directory holds no pickle;
- `torch.load` only ever runs with `weights_only=True`; nothing unpickles (pickle, cloudpickle, joblib...);
- study files go through `yaml.safe_load`: a `!!python/object/apply` tag is one error line, and runs nothing.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers import ROOT, run_cli
from xlt.spec import ModelSpec, load_spec, spec_from_dict

PACKAGE = ROOT / "xlt"
CORPUS = ROOT / "tests" / "bad_inputs"
TINY_QA = CORPUS / "studies" / "tiny_trial.yaml"
TINY_ADAPT = CORPUS / "studies" / "tiny_adapt.yaml"
PYTHON_TAG = CORPUS / "studies" / "python_tag.yaml"  # `!!python/object/apply:os.system ["echo pwned > pwned.txt"]`


def _sources() -> list[tuple[Path, ast.AST]]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    return [(f, ast.parse(f.read_text(encoding="utf-8"), filename=str(f))) for f in files]


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


# ---------------------------------------------------------------- trust_remote_code


def test_trust_remote_code_is_off_by_default():
    assert ModelSpec.model_fields["trust_remote_code"].default is False
    assert load_spec(TINY_QA).model.trust_remote_code is False
    assert load_spec(TINY_QA, ["model.trust_remote_code=true"]).model.trust_remote_code is True


@pytest.mark.parametrize("trust", [False, True])
def test_loaders_pass_trust_remote_code_through(trust, monkeypatch):
    """Every transformers loader xlt calls for a named model gets exactly the study's setting."""
    import transformers

    from xlt.models import load
    from xlt.tokenization import load_tokenizer
    from xlt.train import adapt, qa

    calls: list[tuple[str, object]] = []

    def fake(kind, result):
        def from_pretrained(path, *args, **kwargs):
            calls.append((kind, kwargs.get("trust_remote_code", "<not passed>")))
            return result
        return from_pretrained

    cfg = SimpleNamespace(model_type="bert")
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fake("config", cfg))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake("tokenizer", SimpleNamespace(is_fast=True)))
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", fake("model", object()))
    monkeypatch.setattr(transformers.AutoModelForQuestionAnswering, "from_pretrained", fake("qa model", object()))

    load.load_config("someone/model", trust)
    load.load_qa_model("someone/model", dropout=0.1, trust_remote_code=trust)
    load_tokenizer("someone/model", trust)
    spec = spec_from_dict({"name": "t", "model": {"name": "someone/model", "trust_remote_code": trust},
                           "data": {"english": {"synthetic": {"n": 2}}, "eval": [{"synthetic": {"n": 2}}]}})
    qa.build_model(spec, qa.build_tokenizer(spec, []))
    adapt.source_body(spec, None)
    kinds = {k for k, _ in calls}
    assert kinds == {"config", "tokenizer", "model", "qa model"}, calls
    assert all(value is trust for _, value in calls), calls

    calls.clear()  # and the loaders' own defaults are off
    load.load_config("someone/model")
    load.load_qa_model("someone/model", dropout=0.1)
    load_tokenizer("someone/model")
    assert calls and all(value is False for _, value in calls), calls


def test_no_source_turns_trust_remote_code_on():
    found = [_where(f, n) for f, tree in _sources() for n in ast.walk(tree)
             if isinstance(n, ast.keyword) and n.arg == "trust_remote_code"
             and isinstance(n.value, ast.Constant) and n.value.value is True]
    assert not found, f"trust_remote_code=True hard-coded at {found}"


# ---------------------------------------------------------------- no pickle, anywhere

UNPICKLERS = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve"}


def test_torch_load_is_weights_only_and_nothing_unpickles():
    problems = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                problems += [f"{_where(path, node)} imports {a.name}" for a in node.names
                             if a.name.split(".")[0] in UNPICKLERS or a.name.endswith("cloudpickle")]
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if mod.split(".")[0] in UNPICKLERS or mod.endswith("cloudpickle"):
                    problems.append(f"{_where(path, node)} imports from {mod}")
                if mod == "torch" and any(a.name == "load" for a in node.names):
                    problems.append(f"{_where(path, node)} imports torch.load by name (cannot check its calls)")
            elif isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name == "torch.load":
                    w = _kw(node, "weights_only")
                    if not (isinstance(w, ast.Constant) and w.value is True):
                        problems.append(f"{_where(path, node)} calls torch.load without weights_only=True")
                elif name.endswith("read_pickle"):  # pandas
                    problems.append(f"{_where(path, node)} calls {name}")
                elif name in ("np.load", "numpy.load"):
                    allow = _kw(node, "allow_pickle")
                    if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                        problems.append(f"{_where(path, node)} calls {name} with allow_pickle")
    assert not problems, "\n".join(problems)


def test_study_files_are_read_with_a_safe_loader(monkeypatch):
    import yaml

    problems = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            name = _dotted(node) if isinstance(node, ast.Attribute) else ""
            if name in ("yaml.Loader", "yaml.FullLoader", "yaml.UnsafeLoader", "yaml.CLoader", "yaml.CFullLoader",
                        "yaml.CUnsafeLoader", "yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all",
                        "yaml.full_load_all"):
                problems.append(f"{_where(path, node)} uses {name}")
            if isinstance(node, ast.Call) and _dotted(node.func) in ("yaml.load", "yaml.load_all"):
                loader = _kw(node, "Loader")
                if loader is None or _dotted(loader) not in ("yaml.SafeLoader", "yaml.CSafeLoader"):
                    problems.append(f"{_where(path, node)} calls yaml.load without a safe Loader")
    assert not problems, "\n".join(problems)

    seen = []
    real = yaml.safe_load
    monkeypatch.setattr(yaml, "safe_load", lambda text: seen.append(1) or real(text))
    load_spec(TINY_QA)
    assert seen, "load_spec did not go through yaml.safe_load"


@pytest.mark.parametrize("command", ["validate", "estimate", "trial", "run"])
def test_python_tag_in_a_study_is_one_error_line_and_runs_nothing(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = []
    monkeypatch.setattr(os, "system", lambda *a: ran.append(a) or 0)
    code, out, err = run_cli(command, str(PYTHON_TAG), *(["--out", str(tmp_path / "run")] if command in ("trial", "run") else []))
    assert code == 2 and not ran and not (tmp_path / "pwned.txt").exists()
    assert err.count("\n") == 1 and err.startswith("xlt: error: ") and "Traceback" not in err, err
    assert "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'" in err
    assert not (tmp_path / "run").exists()


def test_python_tag_in_a_real_process_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-m", "xlt.cli", "validate", str(PYTHON_TAG)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "pwned" not in proc.stdout and not (tmp_path / "pwned.txt").exists()


# ---------------------------------------------------------------- checkpoints are safetensors

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"}


def _pickles(run_dir: Path) -> list[str]:
    """Files that are, or contain, a pickle: by name, by the pickle protocol header, or torch.save's zip."""
    found = []
    for f in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        head = f.open("rb").read(2)
        if f.suffix in PICKLE_SUFFIXES or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
            found.append(str(f.relative_to(run_dir)))
        elif zipfile.is_zipfile(f):
            with zipfile.ZipFile(f) as z:
                if any(n.endswith(".pkl") for n in z.namelist()):
                    found.append(str(f.relative_to(run_dir)))
    return found


@pytest.mark.parametrize("study", [TINY_QA, TINY_ADAPT], ids=["qa", "adapt"])
def test_trial_checkpoints_are_safetensors_only(study, tmp_path, monkeypatch):
    monkeypatch.chdir(CORPUS)  # the tiny QA study reads squad/good.json from there; the trial writes only to --out
    out = tmp_path / "run"
    code, stdout, err = run_cli("trial", str(study), "train.save_model=true", "--out", str(out))
    assert code == 0, err
    assert (out / "model" / "model.safetensors").is_file()
    if study is TINY_ADAPT:  # the step-1 and step-3 artifacts the cache shares between trials
        cached = sorted(p.parent.parent.name for p in (out / "artifacts").rglob("model.safetensors"))
        assert cached == ["step1", "step3"], cached
    assert not _pickles(out), _pickles(out)
    assert not list(out.rglob("pytorch_model.bin"))
