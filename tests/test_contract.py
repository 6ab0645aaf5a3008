"""The notebook's shape: the cell tags and storage rules that tests, benchmarks and users rely on."""

import ast
import json
import re

from notebook import NOTEBOOK, ROOT, cells, source


def test_notebook_is_stored_without_outputs():
    for cell in cells():
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, source(cell)[:80]


def test_kernel_is_python3():
    assert json.loads(NOTEBOOK.read_text())["metadata"]["kernelspec"]["name"] == "python3"


def test_exactly_one_parameters_cell_of_plain_literals():
    tagged = cells("parameters")
    assert len(tagged) == 1
    for statement in ast.parse(source(tagged[0])).body:
        assert isinstance(statement, ast.Assign), ast.unparse(statement)
        assert statement.targets[0].id.isupper()
        ast.literal_eval(statement.value)  # raises unless a plain literal


def test_cell_after_parameters_builds_the_config():
    all_cells = cells()
    after = all_cells[all_cells.index(cells("parameters")[0]) + 1]
    assert "Config.from_parameters(globals())" in source(after)


def test_parameters_are_exactly_the_config_fields(nb):
    names = {statement.targets[0].id for statement in ast.parse(source(cells("parameters")[0])).body}
    assert names == {field.name.upper() for field in nb.dataclasses.fields(nb.Config)}


def test_definitions_cells_only_define():
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign)
    for cell in cells("definitions"):
        for statement in ast.parse(source(cell)).body:
            if isinstance(statement, ast.Expr) and "os.environ.setdefault" in ast.unparse(statement):
                continue  # the MPS fallback switch, which must precede `import torch`
            assert isinstance(statement, allowed), f"not a definition: {ast.unparse(statement)[:80]}"
            if isinstance(statement, ast.Assign):  # constants only
                ast.literal_eval(statement.value)


def test_mps_fallback_is_set_before_torch_is_imported():
    code = "\n".join(source(cell) for cell in cells() if cell["cell_type"] == "code")
    assert code.index('os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")') < code.index("import torch")


def test_readme_documents_every_parameter():
    readme = (ROOT / "README.md").read_text()
    names = {statement.targets[0].id for statement in ast.parse(source(cells("parameters")[0])).body}
    missing = [name for name in names if not re.search(rf"`{name}`", readme)]
    assert not missing


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"```sh\n# test\n(.+?)\n```", readme, re.S).group(1).strip()
    assert command in ci


def test_notebook_passes_ruff():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(NOTEBOOK), str(ROOT / "tests")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def hidden(cell):
    return cell["metadata"].get("jupyter", {}).get("source_hidden", False)


def test_collapsed_cells_are_plumbing_under_a_one_line_note():
    all_cells = cells()
    collapsed = [i for i, cell in enumerate(all_cells) if hidden(cell)]
    assert len(collapsed) >= 5  # the checks, checkpoints, resuming, the live panel, Inception and its cache
    for i in collapsed:
        note = all_cells[i - 1]
        assert "definitions" in all_cells[i]["metadata"].get("tags", []), source(all_cells[i])[:80]
        assert note["cell_type"] == "markdown" and "(collapsed)" in source(note), source(note)[:80]
        assert "\n" not in source(note).strip(), f"not one line: {source(note)[:80]}"


def test_the_papers_code_stays_open():
    for name in ("make_schedule", "forward_diffusion", "ddpm_step", "ddim_step", "dpm_solver_step", "reverse_process",
                 "UNet", "diffusion_losses", "train_update", "train", "fid_kid"):
        (cell,) = [cell for cell in cells() if re.search(rf"^(def|class) {name}\b", source(cell), re.M)]
        assert not hidden(cell), name


def test_the_parameters_come_right_after_the_setup_cells():
    all_cells = cells()
    before = all_cells[: all_cells.index(cells("parameters")[0])]
    open_code = [source(cell).split("\n")[0] for cell in before if cell["cell_type"] == "code" and not hidden(cell)]
    assert len(open_code) == 4, open_code  # the version check and its call, the imports, the device
    first = ast.parse(source(cells("parameters")[0])).body[:7]
    assert {statement.targets[0].id for statement in first} == {"IMAGE_SIZE", "BATCH_SIZE", "LEARNING_RATE",
                                                                "TIMESTEPS", "EPOCHS", "BETA_START", "BETA_END"}


def test_the_contents_link_every_section():
    contents = source(cells()[0])
    headings = [line[3:] for cell in cells() if cell["cell_type"] == "markdown"
                for line in source(cell).splitlines() if re.match(r"## \d\. ", line)]
    assert len(headings) == 9
    for heading in headings:  # JupyterLab's anchor of a heading: its text with spaces as dashes
        assert f"(#{heading.replace(' ', '-')})" in contents, heading


def global_reads(tree):
    """The global names a cell's code reads: in each function, the names it neither takes nor assigns itself."""
    reads = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.Lambda)):
            arguments = node.args
            local = {a.arg for a in arguments.args + arguments.kwonlyargs + arguments.posonlyargs}
            local |= {a.arg for a in (arguments.vararg, arguments.kwarg) if a is not None}
            local |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            reads |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - local
    top_level = [node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    return reads | {n.id for node in top_level for n in ast.walk(node)
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def defined_names(tree):
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        else:
            names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def test_no_cell_uses_a_name_that_only_a_later_cell_defines():
    """Reading order: the notebook reads top to bottom, and every function it calls is already defined above."""
    trees = [ast.parse(source(cell)) for cell in cells() if cell["cell_type"] == "code"]
    first = {}
    for index, tree in enumerate(trees):
        for name in defined_names(tree):
            first.setdefault(name, index)
    forward = [(index, name, first[name]) for index, tree in enumerate(trees)
               for name in global_reads(tree) if first.get(name, -1) > index]
    assert not forward, forward
