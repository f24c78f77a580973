"""Static checks of the Slicer module and extension files (no Slicer needed).

What a Slicer build would only find late (or a user at run time): the .ui and the code
disagreeing, widget classes that do not exist, files missing from the installed
extension, extension descriptions without required fields, syntax newer than the Python
of the oldest supported Slicer (5.8: Python 3.9).
"""

import ast
import json
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "RevGANSlicer"
MODULE_FILE = MODULE_DIR / "RevGANSlicer.py"
LIB_DIR = MODULE_DIR / "RevGANSlicerLib"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "RevGANSlicer.ui"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
TOP_CMAKE = ROOT / "CMakeLists.txt"
S4EXT = ROOT / "RevGANSlicer.s4ext"
CATALOG_ENTRY = ROOT / "RevGANSlicer.json"

#: Widget and layout classes the .ui may use, with the library that provides them in
#: Slicer. A class not listed here is either a typo or needs checking and adding.
KNOWN_UI_CLASSES = {
    # Qt (QtWidgets)
    "QWidget": "QtWidgets", "QLabel": "QtWidgets", "QComboBox": "QtWidgets", "QPushButton": "QtWidgets",
    "QCheckBox": "QtWidgets", "QSpinBox": "QtWidgets", "QDoubleSpinBox": "QtWidgets",
    "QProgressBar": "QtWidgets", "QLineEdit": "QtWidgets", "QGroupBox": "QtWidgets", "QRadioButton": "QtWidgets",
    "QToolButton": "QtWidgets", "QTextBrowser": "QtWidgets", "QPlainTextEdit": "QtWidgets", "QFrame": "QtWidgets",
    "QListWidget": "QtWidgets",
    "QVBoxLayout": "QtWidgets", "QHBoxLayout": "QtWidgets", "QFormLayout": "QtWidgets", "QGridLayout": "QtWidgets",
    # CTK (CTKWidgets)
    "ctkCollapsibleButton": "CTKWidgets", "ctkPathLineEdit": "CTKWidgets", "ctkSliderWidget": "CTKWidgets",
    "ctkCheckBox": "CTKWidgets", "ctkComboBox": "CTKWidgets", "ctkDoubleSpinBox": "CTKWidgets",
    "ctkDirectoryButton": "CTKWidgets", "ctkFittedTextBrowser": "CTKWidgets",
    # Slicer's MRML widgets (qMRMLWidgets)
    "qMRMLWidget": "qMRMLWidgets", "qMRMLNodeComboBox": "qMRMLWidgets", "qMRMLSliderWidget": "qMRMLWidgets",
    "qMRMLSpinBox": "qMRMLWidgets",
}
#: Parameter-node field types and the widgets Slicer's parameterNodeWrapper connects them to.
CONNECTABLE = {
    "bool": {"QCheckBox", "ctkCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "ctkDoubleSpinBox", "qMRMLSliderWidget", "qMRMLSpinBox"},
    "str": {"QLineEdit", "QLabel"},
    "enum": {"QComboBox", "ctkComboBox"},
    "node": {"qMRMLNodeComboBox"},
}
PY39 = (3, 9)


def _ui_tree():
    return ElementTree.parse(UI_FILE)


def _ui_widgets():
    """{name: class} of every widget, layout and spacer in the .ui."""
    names = {}
    for element in _ui_tree().iter():
        if element.tag in ("widget", "layout") and element.get("name"):
            names[element.get("name")] = element.get("class")
        elif element.tag == "spacer":
            names[element.get("name")] = "spacer"
    return names


def _module_tree():
    return ast.parse(MODULE_FILE.read_text(), filename=str(MODULE_FILE))


def _python_files():
    return [MODULE_FILE] + sorted(LIB_DIR.glob("*.py"))


def _core_files():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from sync_slicer_cmake import core_files
    finally:
        sys.path.pop(0)
    return core_files(ROOT)


# --------------------------------------------------------------------------- the .ui


def test_ui_file_parses_and_has_the_module_root_widget():
    tree = _ui_tree()
    root = tree.getroot()
    assert root.tag == "ui"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "RevGANSlicer"
    assert root.find("class").text == "RevGANSlicer"


def test_every_self_ui_name_used_in_the_code_exists_in_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    assert used, "the module uses no self.ui widgets?"
    missing = sorted(used - set(_ui_widgets()))
    assert not missing, f"self.ui names not in {UI_FILE.name}: {missing}"


def test_widget_names_are_unique():
    names = [element.get("name") for element in _ui_tree().iter() if element.tag in ("widget", "layout", "spacer")]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates


def test_every_ui_class_is_a_known_qt_ctk_or_mrml_class_and_custom_ones_are_declared():
    tree = _ui_tree()
    used = {element.get("class") for element in tree.iter() if element.tag in ("widget", "layout")}
    unknown = sorted(used - set(KNOWN_UI_CLASSES))
    assert not unknown, f"unknown widget classes in the .ui: {unknown}"
    declared = {custom.findtext("class"): custom for custom in tree.getroot().iter("customwidget")}
    for name in sorted(used):
        if KNOWN_UI_CLASSES[name] == "QtWidgets":
            continue
        assert name in declared, f"{name} is used but not declared in <customwidgets>"
        assert declared[name].findtext("header") == f"{name}.h"
        assert declared[name].findtext("extends") == "QWidget"
    for name in declared:
        assert name in KNOWN_UI_CLASSES and KNOWN_UI_CLASSES[name] != "QtWidgets"


def test_mrml_widgets_receive_the_scene():
    """qMRMLNodeComboBoxes only list nodes if the root widget passes them the scene."""
    tree = _ui_tree()
    combos = {name for name, cls in _ui_widgets().items() if cls == "qMRMLNodeComboBox"}
    connected = {c.findtext("receiver") for c in tree.getroot().iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert combos and combos <= connected


def _parameter_fields():
    """{field: kind} of the @parameterNodeWrapper class in the module file."""
    for node in _module_tree().body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list):
            fields = {}
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign):
                    annotation = ast.unparse(statement.annotation)
                    if annotation.startswith("vtkMRML"):
                        kind = "node"
                    elif annotation in ("Task", "Direction"):
                        kind = "enum"
                    else:
                        kind = re.sub(r"^Annotated\[(\w+),.*$", r"\1", annotation)
                    fields[statement.target.id] = kind
            return fields
    raise AssertionError("no @parameterNodeWrapper class in the module")


def test_ui_parameter_names_match_parameter_node_fields_and_widget_kinds():
    fields = _parameter_fields()
    widgets = _ui_widgets()
    bound = {}
    for element in _ui_tree().iter("widget"):
        for prop in element.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = element.get("class")
    assert bound, "no widget is connected to the parameter node"
    for parameter, widget_class in bound.items():
        assert parameter in fields, f"SlicerParameterName {parameter!r} is not a parameter node field"
        assert widget_class in CONNECTABLE[fields[parameter]], (
            f"{parameter} ({fields[parameter]}) cannot be shown in a {widget_class}")
    # The fields not bound in the .ui are synchronised by hand in the widget.
    source = MODULE_FILE.read_text()
    for parameter in set(fields) - set(bound):
        assert f"_parameterNode.{parameter}" in source or f"node.{parameter}" in source, parameter
    assert widgets


def test_module_file_keeps_annotations_evaluable_for_the_parameter_node_wrapper():
    """``from __future__ import annotations`` turns annotations into strings, which the
    parameter node wrapper of older Slicer versions cannot read."""
    tree = _module_tree()
    futures = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "__future__"]
    assert not futures


def test_module_has_the_four_slicer_classes_and_a_complete_self_test():
    classes = {node.name: node for node in _module_tree().body if isinstance(node, ast.ClassDef)}
    for name, base in (("RevGANSlicer", "ScriptedLoadableModule"), ("RevGANSlicerWidget", "ScriptedLoadableModuleWidget"),
                       ("RevGANSlicerLogic", "ScriptedLoadableModuleLogic"),
                       ("RevGANSlicerTest", "ScriptedLoadableModuleTest")):
        assert name in classes
        assert base in [ast.unparse(b) for b in classes[name].bases]
    test = classes["RevGANSlicerTest"]
    methods = [node.name for node in test.body if isinstance(node, ast.FunctionDef)]
    tests = [name for name in methods if name.startswith("test_")]
    assert {"test_SuperResolution", "test_KernelConversion", "test_SideBySideLayout"} <= set(tests)
    run_test = next(node for node in test.body if isinstance(node, ast.FunctionDef) and node.name == "runTest")
    listed = {c.value for c in ast.walk(run_test) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    assert set(tests) <= listed, "runTest (Reload and Test) must run every test_ method"
    # Slicer's default runTest treats every callable with "test" in its name as a test.
    helpers = [name for name in methods if "test" in name and not name.startswith("test_")]
    assert not helpers, helpers


def test_categories_are_translated_in_slicers_shared_context():
    """Translated under the module's own context, "Image Synthesis" would become a second,
    untranslated folder next to the translated one in a non-English module selector."""
    tree = _module_tree()
    imported = {alias.asname or alias.name for node in tree.body
                if isinstance(node, ast.ImportFrom) and node.module == "slicer.i18n" for alias in node.names}
    assert "translate" in imported
    assignments = [node for node in ast.walk(tree) if isinstance(node, ast.Assign)
                   and any(ast.unparse(target) == "self.parent.categories" for target in node.targets)]
    assert len(assignments) == 1 and isinstance(assignments[0].value, ast.List)
    for category in assignments[0].value.elts:
        assert isinstance(category, ast.Call) and ast.unparse(category.func) == "translate", ast.unparse(category)
        context, text = category.args
        assert context.value == "qSlicerAbstractCoreModule" and isinstance(text.value, str)


def _selfTestMethods():
    test = next(node for node in _module_tree().body if isinstance(node, ast.ClassDef) and node.name == "RevGANSlicerTest")
    return {node.name: node for node in test.body if isinstance(node, ast.FunctionDef)}


def _calledNames(function):
    return [ast.unparse(node.func).split(".")[-1] for node in ast.walk(function) if isinstance(node, ast.Call)]


def test_ctest_registration_tells_the_self_test_it_runs_on_a_build_machine():
    """The extension build machines run the module's ctest: it must carry the variable that
    makes the self-test skip the PyTorch download and inference."""
    sys.path.insert(0, str(MODULE_DIR))
    try:
        from RevGANSlicerLib.testing import SKIP_INFERENCE_VARIABLE
    finally:
        sys.path.pop(0)
    cmake = MODULE_CMAKE.read_text()
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in cmake
    assert re.search(r"set_property\(TEST py_\$\{MODULE_NAME\} APPEND PROPERTY ENVIRONMENT\s+\"" +
                     SKIP_INFERENCE_VARIABLE + r"=1\"\)", cmake)


def test_only_the_guarded_logic_installs_torch_and_every_model_run_goes_through_it():
    methods = _selfTestMethods()
    installers = [name for name, method in methods.items() if "ensureDependencies" in _calledNames(method)]
    assert installers == ["_inferenceLogic"]
    calls = _calledNames(methods["_inferenceLogic"])
    assert calls.index("inferenceSkipReason") < calls.index("ensureDependencies")
    assert "SkipTest" in calls
    runsModels = {"translate", "translateInSeparateProcess"}
    for name, method in methods.items():
        called = set(_calledNames(method))
        for helper in called & set(methods):
            called |= set(_calledNames(methods[helper]))
        if called & runsModels:
            assert "_inferenceLogic" in called, f"{name} runs a model without the build-machine guard"
    # What build machines still check, without PyTorch.
    assert "modelCard" in _calledNames(methods["test_PanelAndModelCards"])
    assert "_inferenceLogic" not in _calledNames(methods["test_PanelAndModelCards"])


# --------------------------------------------------------------------------- python files


@pytest.mark.parametrize("path", _python_files() + [ROOT / p for p in _core_files() if p.endswith(".py")],
                         ids=lambda p: str(Path(p).relative_to(ROOT)))
def test_python_files_use_python_3_9_syntax(path):
    """Slicer 5.8 ships Python 3.9: the module, its library and the RevGANCore files the
    extension installs must parse as 3.9 and avoid 3.10+ keyword arguments."""
    source = Path(path).read_text()
    tree = ast.parse(source, filename=str(path), feature_version=PY39)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            keywords = {k.arg for k in node.keywords}
            assert not (name.endswith("zip") and "strict" in keywords), f"{path}: zip(strict=) is Python 3.10+"
            assert not (name.endswith("dataclass") and keywords & {"slots", "kw_only"}), (
                f"{path}: dataclass(slots=/kw_only=) is Python 3.10+")
        if isinstance(node, ast.Match if hasattr(ast, "Match") else ()):
            raise AssertionError(f"{path}: match statements are Python 3.10+")


def test_library_does_not_import_qt_ctk_or_scripted_module_at_import_time():
    forbidden = {"qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "torch"}
    for path in sorted(LIB_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only; functions may import what they need
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name not in forbidden, f"{path.name} imports {name} at module level"


def test_module_never_imports_torch_at_import_time():
    for node in _module_tree().body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(name.split(".")[0] == "torch" for name in names)


def test_every_library_module_imports_with_slicer_core_only():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import importlib, pkgutil, RevGANSlicerLib; "
            "[importlib.import_module('RevGANSlicerLib.' + m.name) for m in pkgutil.iter_modules(RevGANSlicerLib.__path__)]; "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('qt', 'ctk', 'torch')))")
    result = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR)], capture_output=True, text=True, timeout=300,
                            cwd=str(ROOT))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"importing the library pulled in {result.stdout.strip()}"


# --------------------------------------------------------------------------- CMake


def _cmake_list(text: str, variable: str):
    match = re.search(r"set\(" + variable + r"\s*\n(.*?)\)", text, re.DOTALL)
    assert match, f"set({variable} ...) not found"
    return [line.strip() for line in match.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def _listed_module_scripts():
    text = MODULE_CMAKE.read_text()
    return {entry.replace("${MODULE_NAME}", "RevGANSlicer") for entry in _cmake_list(text, "MODULE_PYTHON_SCRIPTS")}


def test_cmake_lists_every_module_python_file():
    listed = _listed_module_scripts()
    actual = {path.relative_to(MODULE_DIR).as_posix() for path in _python_files()}
    assert listed == actual, f"missing: {sorted(actual - listed)}; listed but absent: {sorted(listed - actual)}"


def test_cmake_lists_every_revgancore_file():
    listed = _cmake_list(MODULE_CMAKE.read_text(), "REVGANCORE_FILES")
    actual = _core_files()
    assert listed == actual, (
        f"RevGANSlicer/CMakeLists.txt must list every RevGANCore file (the installed extension carries "
        f"its own copy). Missing: {sorted(set(actual) - set(listed))}; absent: {sorted(set(listed) - set(actual))}. "
        "Run: python tools/sync_slicer_cmake.py")


def _imports(path: Path):
    """(module name, level) of every import in a file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0, []
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level, [alias.name for alias in node.names]


def _resolve(package: str, name: str, level: int, names):
    """Candidate files (relative to the package's parent) an import can load."""
    if level:
        base = package.split(".")[: len(package.split(".")) - (level - 1)]
        parts = base + (name.split(".") if name else [])
    else:
        parts = name.split(".")
    targets = [parts] + [parts + [n] for n in names]
    return ["/".join(t) for t in targets]


def test_every_file_the_module_imports_is_listed():
    """Follow the imports of the module and its library (and of RevGANCore) to files in
    RevGANSlicerLib or RevGANCore: each must be in the CMake lists."""
    listed = {"RevGANSlicer/" + p for p in _listed_module_scripts()} | set(
        _cmake_list(MODULE_CMAKE.read_text(), "REVGANCORE_FILES"))
    layout = {"RevGANSlicerLib": "RevGANSlicer/RevGANSlicerLib", "RevGANCore": "RevGANCore"}
    queue = [MODULE_FILE] + sorted(LIB_DIR.glob("*.py"))
    seen = set()
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        relative = path.relative_to(ROOT).as_posix()
        package = relative.replace("RevGANSlicer/RevGANSlicerLib", "RevGANSlicerLib").rsplit("/", 1)[0].replace("/", ".")
        for name, level, names in _imports(path):
            for candidate in _resolve(package, name, level, names):
                top = candidate.split("/")[0]
                if top not in layout:
                    continue
                base = layout[top] + candidate[len(top):]
                for file in (base + ".py", base + "/__init__.py"):
                    if (ROOT / file).is_file():
                        assert file in listed, f"{relative} imports {file}, which CMakeLists.txt does not list"
                        queue.append(ROOT / file)


def test_cmake_resources_exist_and_shipped_models_are_installed():
    text = MODULE_CMAKE.read_text()
    for entry in _cmake_list(text, "MODULE_PYTHON_RESOURCES"):
        assert (MODULE_DIR / entry.replace("${MODULE_NAME}", "RevGANSlicer")).is_file(), entry
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert "Resources/Models" in text and "install(DIRECTORY ${REVGAN_MODELS_DIR}" in text


def _png_size(path: Path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_icons_are_real_128_pixel_pngs_and_match_their_drawing():
    for path in (MODULE_DIR / "Resources" / "Icons" / "RevGANSlicer.png", ROOT / "Resources" / "Icons" / "RevGANSlicer.png"):
        assert _png_size(path) == (128, 128)
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "make_slicer_icons.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- extension description


def _cmake_set(text: str, name: str) -> str:
    match = re.search(r'set\(\s*' + name + r'\s+"([^"]*)"\s*\)', text)
    assert match, f"{name} is not set in {TOP_CMAKE.name}"
    return match.group(1)


def _s4ext():
    fields = {}
    for line in S4EXT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


def test_top_level_cmake_carries_the_extension_metadata():
    text = TOP_CMAKE.read_text()
    project = re.search(r"project\(\s*(\w+)", text).group(1)
    assert project == "RevGANSlicer" == CATALOG_ENTRY.stem == S4EXT.stem
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                 "EXTENSION_ICONURL", "EXTENSION_DEPENDS"):
        assert _cmake_set(text, name).strip(), name
    assert "PyTorch" in _cmake_set(text, "EXTENSION_DEPENDS").split()
    assert "add_subdirectory(RevGANSlicer)" in text
    icon = _cmake_set(text, "EXTENSION_ICONURL")
    assert icon.startswith("https://") and icon.endswith(".png")
    path = icon.split("/main/", 1)[1]
    assert (ROOT / path).is_file(), f"EXTENSION_ICONURL points at {path}, which is not in the repository"
    # The only screenshot is a mock made from a phantom: it must not reach the catalog.
    assert _cmake_set(text, "EXTENSION_SCREENSHOTURLS") == ""


def test_s4ext_has_the_required_fields_and_agrees_with_cmake():
    fields = _s4ext()
    for key in ("scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage", "contributors",
                "category", "iconurl", "status", "description", "enabled"):
        assert fields.get(key), f".s4ext lacks {key}"
    assert "screenshoturls" not in fields, "the mock screenshot must not reach the catalog"
    text = TOP_CMAKE.read_text()
    assert fields["category"] == _cmake_set(text, "EXTENSION_CATEGORY")
    assert fields["iconurl"] == _cmake_set(text, "EXTENSION_ICONURL")
    assert fields["description"] == _cmake_set(text, "EXTENSION_DESCRIPTION")
    assert fields["depends"].split() == _cmake_set(text, "EXTENSION_DEPENDS").split()
    assert fields["scm"] == "git" and fields["enabled"] in ("0", "1")


def test_catalog_entry_follows_the_current_extensions_index_schema():
    """The ExtensionsIndex JSON entry (schema v1.0.2): required keys, no others, types."""
    entry = json.loads(CATALOG_ENTRY.read_text())
    assert b"\r" not in CATALOG_ENTRY.read_bytes(), "the index requires LF line endings"
    assert entry["$schema"] == ("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
                                "slicer-extension-catalog-entry-schema-v1.0.2.json#")
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert isinstance(entry["category"], str) and entry["category"]
    assert re.match(r"^(https|git)://", entry["scm_url"])
    repository = entry["scm_url"].rstrip("/").rsplit("/", 1)[1].removesuffix(".git")
    # The index's repository-name check wants "slicer" in the name; the convention (and the
    # name it suggests) is Slicer + extension name.
    assert repository.startswith("Slicer"), "the index wants repositories named Slicer<Name>"
    assert not CATALOG_ENTRY.stem.lower().startswith("slicer"), "and extension names that do not"
    assert all(isinstance(name, str) for name in entry.get("build_dependencies", []))
    assert isinstance(entry.get("tier", 1), int) and 1 <= entry.get("tier", 1) <= 5
    fields = _s4ext()
    assert entry["category"] == fields["category"]
    assert entry["scm_url"] == fields["scmurl"] and entry.get("scm_revision") == fields["scmrevision"]
    assert entry.get("build_dependencies", []) == fields["depends"].split()
    assert str(entry.get("tier")) == fields.get("tier")


# --------------------------------------------------------------------------- self-test runner


def test_selftest_runner_says_it_skipped_without_slicer():
    script = ROOT / "Testing" / "run_slicer_selftest.sh"
    environment = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=environment, timeout=60)
    assert result.returncode == 0
    assert "SKIPPED" in result.stdout and "SLICER_EXECUTABLE" in result.stdout


def test_selftest_runner_runs_the_self_test_with_slicer_and_reports_failure(tmp_path):
    """With a stand-in "Slicer" that records its arguments: the runner asks it to run
    RevGANSlicerTest through slicer.testing, and passes its failure on."""
    record = tmp_path / "arguments.txt"
    fake = tmp_path / "Slicer"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\nexit "${{FAKE_STATUS:-0}}"\n')
    fake.chmod(0o755)
    script = ROOT / "Testing" / "run_slicer_selftest.sh"
    environment = {"PATH": "/usr/bin:/bin", "SLICER_EXECUTABLE": str(fake)}
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=environment, timeout=60)
    assert result.returncode == 0 and "PASSED" in result.stdout
    arguments = record.read_text().splitlines()
    assert "--testing" in arguments and "--additional-module-paths" in arguments
    assert str(MODULE_DIR) in arguments
    code = arguments[arguments.index("--python-code") + 1]
    assert "slicer.testing.runUnitTest" in code and "'RevGANSlicer'" in code
    environment["FAKE_STATUS"] = "3"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=environment, timeout=60)
    assert result.returncode == 1 and "FAILED" in result.stderr
    environment["SLICER_EXECUTABLE"] = str(tmp_path / "missing")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=environment, timeout=60)
    assert result.returncode == 2
