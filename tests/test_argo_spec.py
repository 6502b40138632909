"""Argo workflow specs: what a user writes is read faithfully, and every mistake is named clearly."""

import json
import pickle

import pytest
import yaml

from balsam.argo import spec
from balsam.argo.spec import MAX_TASKS, WorkflowSpec, load_spec, parse_spec, validate
from balsam.errors import BalsamError, SpecError
from balsam.resources import Resources
from balsam.taskspec import NAME_PATTERN, TaskSpec, task_from_dict

EXAMPLE = """\
name: demo
tasks:
  - {name: produce, app: make, site: alpha, params: {n: 3}, resources: {nodes: 1}, outputs: [out.txt]}
  - {name: consume, app: use, parents: [produce], inputs: {in.txt: produce/out.txt}}
"""

EXPECTED = WorkflowSpec(
    name="demo",
    tasks=[
        TaskSpec(name="produce", app="make", params={"n": 3}, site="alpha", outputs=("out.txt",)),
        TaskSpec(name="consume", app="use", parents=("produce",), inputs={"in.txt": "produce/out.txt"}),
    ],
)

SITES = {"alpha": ["make", "use"], "beta": ["use"]}


def workflow(*tasks):
    return {"name": "wf", "tasks": list(tasks)}


def task(name="t", app="use", **fields):
    return {"name": name, "app": app, **fields}


def problems_of(call, *args):
    with pytest.raises(SpecError) as caught:
        call(*args)
    return caught.value


# ---------------------------------------------------------------------------------------------
# Good specs


def test_the_example_becomes_dataclasses_with_defaults():
    parsed = parse_spec(yaml.safe_load(EXAMPLE))
    assert parsed == EXPECTED
    consume = parsed.tasks[1]
    assert consume.resources == Resources(1, 1, 1, 0, 1, None)
    assert (consume.params, consume.tags, consume.outputs, consume.site) == ({}, {}, (), None)
    assert validate(parsed.tasks, SITES) == ["produce", "consume"]


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_load_spec_reads_yaml_and_json_files(tmp_path, suffix):
    path = tmp_path / f"demo{suffix}"
    text = json.dumps(yaml.safe_load(EXAMPLE), indent=1) if suffix == ".json" else EXAMPLE
    path.write_text(text)
    assert load_spec(path) == EXPECTED
    assert load_spec(str(path)) == EXPECTED


def test_every_resource_and_its_aliases_are_read():
    doc = task(
        resources={
            "nodes": 4,
            "ranks_per_node": 8,
            "threads_per_rank": 2,
            "gpus_per_rank": 1,
            "node_packing_count": 2,
            "wall_time_min": 30,
        }
    )
    parsed = task_from_dict(doc, "tasks[0]").resources
    assert parsed == Resources(
        nodes=4, ranks_per_node=8, threads_per_rank=2, gpus_per_rank=1, node_packing_count=2, wall_time_min=30.0
    )
    assert isinstance(parsed.wall_time_min, float)
    full = task_from_dict(task(resources={"node_packing_count": 3, "wall_time_min": 2.5}), "x").resources
    assert (full.node_packing_count, full.wall_time_min) == (3, 2.5)


def test_params_with_shell_metacharacters_are_kept_byte_for_byte(tmp_path):
    hostile = "a; rm -rf ~ && $(reboot) `id` | tee >/dev/null <x 'q' \"dq\" \\ * ? {n} %s\n\ttab ünï"
    doc = workflow(task(params={"arg": hostile, "n": 3, "x": 1.5, "flag": True}))
    assert parse_spec(doc).tasks[0].params["arg"] == hostile
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    params = load_spec(path).tasks[0].params
    assert params == {"arg": hostile, "n": 3, "x": 1.5, "flag": True}
    assert params["arg"].encode() == hostile.encode()


def test_uris_and_nested_outputs_are_accepted():
    inputs = {"a.dat": "file:///abs/path/a.dat", "b.dat": "globus://endpoint-1/data/b.dat", "c": "p/sub/out.h5"}
    parsed = parse_spec(workflow(task("p", outputs=["sub/out.h5"]), task("c", parents=["p"], inputs=inputs)))
    assert parsed.tasks[1].inputs == inputs
    assert validate(parsed.tasks, SITES) == ["p", "c"]


def test_empty_optional_keys_mean_not_given():
    # `params:` with nothing after it is None in YAML.
    parsed = parse_spec(yaml.safe_load("name: w\ntasks:\n  - name: a\n    app: use\n    params:\n    site:\n"))
    assert parsed.tasks[0] == TaskSpec(name="a", app="use")


def test_the_dataclasses_are_frozen_and_copy_the_input():
    doc = task(params={"n": 1}, parents=["p"])
    parsed = task_from_dict(doc, "tasks[0]")
    doc["params"]["n"] = 2
    assert parsed.params == {"n": 1}
    with pytest.raises(AttributeError):
        parsed.name = "other"


@pytest.mark.parametrize("name", ["a", "A-b_c.d", "0", "x" * 200, "..a", ".hidden"])
def test_names_that_are_allowed(name):
    assert NAME_PATTERN.fullmatch(name)
    assert parse_spec({"name": name, "tasks": [task(name)]}).tasks[0].name == name


# ---------------------------------------------------------------------------------------------
# Bad specs: one problem each, naming the task


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"app": "use"}, "tasks[0]: task name is required"),
        (task(""), "tasks[0]: task name is required"),
        (task(7), "tasks[0]: task name must be a string, got int 7"),
        (task("a/b"), "tasks[0]: task name 'a/b' may hold only letters, digits, '_', '.' and '-'"),
        (task("wf:a"), "task name 'wf:a' may hold only"),
        (task(".."), "task name '..' may hold only"),
        (task("x" * 201), "tasks[0]: task name is 201 characters long; at most 200"),
        ("just text", "tasks[0]: a task must be a mapping of keys, not 'just text'"),
        (task(parent=["p"]), "task 't': unknown key 'parent' (did you mean 'parents'?)"),
        (task(colour="red"), "task 't': unknown key 'colour' (known: name, app, params"),
        ({"name": "t"}, "task 't': app is required: the name of an app, got nothing"),
        (task(app=""), "task 't': app is required"),
        (task(app=["a"]), "task 't': app is required: the name of an app, got list"),
        (task(params=["n=1"]), "task 't': params must be a mapping, not list"),
        (task(params={"1n": 1}), "task 't': parameter name '1n' must be letters, digits and '_'"),
        (task(params={"a-b": 1}), "task 't': parameter name 'a-b' must be"),
        (task(params={"n": None}), "task 't': parameter 'n' must be a string, number or boolean, not nothing"),
        (task(params={"n": [1, 2]}), "task 't': parameter 'n' must be a string, number or boolean, not list"),
        (task(params={"n": {"a": 1}}), "task 't': parameter 'n' must be a string, number or boolean, not dict"),
        (task(params={"n": "a\x00b"}), "task 't': parameter 'n' contains a NUL character"),
        (task(params={"n": float("nan")}), "task 't': parameter 'n' must be a finite number"),
        (task(resources=[1]), "task 't': resources must be a mapping, not list"),
        (task(resources={"nodes": 0}), "task 't': resources.nodes must be a whole number from 1 to 2147483647, got"),
        (task(resources={"nodes": True}), "task 't': resources.nodes must be a whole number from 1"),
        (task(resources={"nodes": 1.5}), "task 't': resources.nodes must be a whole number from 1"),
        (task(resources={"nodes": "2"}), "task 't': resources.nodes must be a whole number from 1"),
        (task(resources={"nodes": 2**31}), "task 't': resources.nodes must be a whole number from 1 to 2147483647"),
        (task(resources={"ranks_per_node": 0}), "task 't': resources.ranks_per_node must be a whole number from 1"),
        (task(resources={"threads_per_rank": -1}), "task 't': resources.threads_per_rank must be"),
        (task(resources={"gpus_per_rank": -1}), "task 't': resources.gpus_per_rank must be a whole number from 0"),
        (task(resources={"node_packing": 2}), "task 't': unknown resource 'node_packing' (did you mean 'node_packing_count'?)"),
        (task(resources={"node_packing_count": 0}), "task 't': resources.node_packing_count must be"),
        (task(resources={"wall_time_min": 0}), "task 't': resources.wall_time_min must be a positive number of"),
        (task(resources={"wall_time_min": -5}), "task 't': resources.wall_time_min must be a positive number of minutes"),
        (task(resources={"wall_time_min": "1h"}), "task 't': resources.wall_time_min must be a positive number"),
        (task(resources={"wall_time_min": float("inf")}), "task 't': resources.wall_time_min must be a positive number"),
        (task(resources={"wall_time_min": 10**5000}), "task 't': resources.wall_time_min must be a positive number of minutes up to"),
        (task(resources={"wall_time": 5}), "task 't': unknown resource 'wall_time' (did you mean 'wall_time_min'?)"),
        (task(resources={"node": 2}), "task 't': unknown resource 'node' (did you mean 'nodes'?)"),
        (task(parents="p"), "task 't': parents must be a list, not 'p'"),
        (task(parents=[1]), "task 't': parents must be task names, got int 1"),
        (task(parents=["p", "p"]), "task 't': parent 'p' is listed more than once"),
        (task(parents=["t"]), "task 't': a task cannot be its own parent"),
        (task(inputs=["a"]), "task 't': inputs must be a mapping, not list"),
        (task(inputs={"a": "http://host/a"}), "task 't': input 'a': source 'http://host/a' uses an unsupported scheme"),
        (task(inputs={"a": "file://host/a"}), "task 't': input 'a': source 'file://host/a' must be file:///ABS"),
        (task(inputs={"a": "file:///"}), "task 't': input 'a': source 'file:///' names no file"),
        (task(inputs={"a": "globus://ep"}), "task 't': input 'a': source 'globus://ep' must be globus://ENDPOINT/PATH"),
        (task(inputs={"a": "out.txt"}), "task 't': input 'a': source 'out.txt' is neither 'TASK/OUTPUT' nor"),
        (task(inputs={"a": "p/../x"}), "task 't': input 'a': source 'p/../x' names an output that must not"),
        (task(inputs={"a": 3}), "task 't': input 'a': source int 3 must be 'TASK/OUTPUT' or a file:///, globus:// or ssh://"),
        (task(outputs="out.txt"), "task 't': outputs must be a list, not 'out.txt'"),
        (task(outputs=["o", "o"]), "task 't': output 'o' is listed more than once"),
        (task(outputs=[""]), "task 't': output '' must be a non-empty file name"),
        (task(site=""), "task 't': site must be the name of a site, got ''"),
        (task(site=3), "task 't': site must be the name of a site, got int 3"),
        (task(tags=["a"]), "task 't': tags must be a mapping, not list"),
        (task(tags={"run": 3}), "task 't': tag 'run': int 3 must be a non-empty string key and a string value"),
        (task(tags={"run": "a\x00"}), "task 't': tag 'run' contains a NUL character"),
    ],
)
def test_a_bad_task_is_refused_naming_it(bad, message):
    error = problems_of(parse_spec, workflow(bad))
    assert len(error.problems) == 1, error.problems
    assert message in error.problems[0]
    assert str(error) == f"spec: {error.problems[0]}"
    assert isinstance(error, BalsamError)
    if isinstance(bad, dict):  # AddTasks checks one task the same way
        assert message in str(problems_of(task_from_dict, bad, "tasks[0]"))


HOSTILE_NAMES = [
    ("../x", "must not contain '..'"),
    ("/etc/passwd", "must be relative to the task's work folder, not absolute"),
    ("a/../../b", "must not contain '..'"),
    ("..", "must not contain '..'"),
    (".", "names the work folder itself"),
    ("./x", "is not in normal form (write 'x')"),
    ("a//b", "is not in normal form (write 'a/b')"),
    ("dir/", "is not in normal form (write 'dir')"),
    ("a\x00b", "contains a NUL character"),
]


@pytest.mark.parametrize(("path", "problem"), HOSTILE_NAMES)
def test_hostile_input_names_are_refused(path, problem):
    error = problems_of(parse_spec, workflow(task(inputs={path: "file:///data/x"})))
    assert len(error.problems) == 1
    assert error.problems[0].startswith(f"task 't': input {path!r} {problem}")


@pytest.mark.parametrize(("path", "problem"), HOSTILE_NAMES)
def test_hostile_output_names_are_refused(path, problem):
    error = problems_of(parse_spec, workflow(task(outputs=[path])))
    assert len(error.problems) == 1
    assert error.problems[0].startswith(f"task 't': output {path!r} {problem}")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (None, "spec: the spec is empty"),
        ([task()], "spec: a workflow spec must be a mapping with `name` and `tasks`, not list"),
        ({"name": "wf", "task": [task()]}, "unknown top-level key 'task' (did you mean 'tasks'?)"),
        ({"name": "wf", "tasks": [task()], "owner": "me"}, "unknown top-level key 'owner' (known: name, tasks)"),
        ({"tasks": [task()]}, "spec: workflow name is required"),
        ({"name": "my/wf", "tasks": [task()]}, "workflow name 'my/wf' may hold only"),
        ({"name": "w" * 201, "tasks": [task()]}, "workflow name is 201 characters long; at most 200"),
        ({"name": "wf"}, "spec: tasks is required: a non-empty list of tasks"),
        ({"name": "wf", "tasks": []}, "spec: tasks is required: a non-empty list of tasks"),
        ({"name": "wf", "tasks": {"a": task()}}, "spec: tasks must be a list, not dict"),
        (workflow(task("a"), task("b"), task("a")), "task 'a' (tasks[2]) has the same name as tasks[0]"),
    ],
)
def test_a_bad_workflow_is_refused(doc, message):
    error = problems_of(parse_spec, doc)
    assert message in str(error)


def test_too_many_tasks_are_refused(monkeypatch):
    assert MAX_TASKS == 1_000_000
    monkeypatch.setattr(spec, "MAX_TASKS", 2)
    error = problems_of(parse_spec, workflow(task("a"), task("b"), task("c")))
    assert error.problems == ["tasks has 3 entries; at most 2"]
    error = problems_of(validate, [TaskSpec("c", "use")], SITES, {"a": (), "b": ()})
    assert error.problems == ["the workflow would have 3 tasks; at most 2"]


# ---------------------------------------------------------------------------------------------
# Files


def test_file_errors_name_the_file_and_line(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert str(problems_of(load_spec, missing)) == f"{missing}: no such file"
    assert str(problems_of(load_spec, tmp_path)) == f"{tmp_path}: is a folder, not a file"

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: wf\ntasks:\n  - {name: a, app: [unclosed\n")
    message = str(problems_of(load_spec, bad_yaml))
    assert message.startswith(f"{bad_yaml}: line 4, column 1: not valid YAML: ")

    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"name": "wf",\n "tasks": [,]}')
    message = str(problems_of(load_spec, bad_json))
    assert message == f"{bad_json}: line 2, column 12: not valid JSON: Expecting value"

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe")
    assert str(problems_of(load_spec, binary)) == f"{binary}: not UTF-8 text (byte 6)"

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert str(problems_of(load_spec, empty)) == f"{empty}: the spec is empty"

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("name: wf\ntasks:\n  - {name: a, app: use, nodes: 2}\n")
    assert (
        str(problems_of(load_spec, wrong))
        == f"{wrong}: task 'a': unknown key 'nodes' (a resource: put it under `resources:`)"
    )


# ---------------------------------------------------------------------------------------------
# The graph and placement


def specs(*tasks):
    return parse_spec(workflow(*tasks)).tasks


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            [task("produce", outputs=["out.txt"]), task("consume", parents=["produce2"])],
            "task 'consume': parent 'produce2' is not a task of this workflow",
        ),
        ([task("x", app="foo")], "task 'x': app 'foo' is offered by no registered site (sites: alpha, beta)"),
        ([task("x", site="gamma")], "task 'x': pinned to site 'gamma', which is not registered (sites: alpha, beta)"),
        (
            [task("x", app="make", site="beta")],
            "task 'x': pinned to site 'beta', which does not offer app 'make' (it offers: use)",
        ),
        (
            [task("p", outputs=["o"]), task("q", outputs=["o"]), task("c", parents=["p"], inputs={"i": "q/o"})],
            "task 'c': input 'i' comes from 'q/o', but 'q' is not a parent of this task",
        ),
        (
            [task("p", outputs=["o", "log"]), task("c", parents=["p"], inputs={"i": "p/other"})],
            "task 'c': input 'i' wants 'other' from task 'p', which declares no such output (its outputs: log, o)",
        ),
        (
            [task("p"), task("c", parents=["p"], inputs={"i": "p/o"})],
            "task 'c': input 'i' wants 'o' from task 'p', which declares no such output (its outputs: none)",
        ),
    ],
)
def test_graph_and_placement_problems_name_the_task(tasks, message):
    error = problems_of(validate, specs(*tasks), SITES)
    assert error.problems == [message]


def test_no_registered_site_is_said_plainly():
    error = problems_of(validate, specs(task("x")), {})
    assert error.problems == ["task 'x': app 'use' is offered by no registered site (no site is registered)"]


def test_a_cycle_is_named_in_order():
    tasks = specs(task("z"), task("a", parents=["c"]), task("b", parents=["a", "z"]), task("c", parents=["b"]))
    error = problems_of(validate, tasks, SITES)
    assert error.problems == ["cycle: a -> b -> c -> a"]


def test_every_separate_cycle_is_named():
    tasks = [TaskSpec("self", "use", parents=("self",))]
    tasks += specs(task("a", parents=["b"]), task("b", parents=["a"]), task("after", parents=["a"]))
    error = problems_of(validate, tasks, SITES)
    assert error.problems == ["cycle: self -> self", "cycle: a -> b -> a"]


def test_a_long_cycle_is_named_in_short():
    tasks = specs(*(task(f"c{i}", parents=[f"c{(i - 1) % 100}"]) for i in range(100)))
    error = problems_of(validate, tasks, SITES)
    first, last = " -> ".join(f"c{i}" for i in range(10)), " -> ".join(f"c{i}" for i in range(95, 100))
    assert error.problems == [f"cycle: {first} -> ... (85 more) -> {last} -> c0"]


def test_all_problems_are_reported_together():
    doc = workflow(
        task("a", app=""),
        task("b/c"),
        task("d", resources={"nodes": 0}, bogus=1),
    )
    error = problems_of(parse_spec, doc)
    assert error.problems == [
        "task 'a': app is required: the name of an app, got ''",
        "tasks[1]: task name 'b/c' may hold only letters, digits, '_', '.' and '-' (and is not '.' or '..')",
        "task 'd': unknown key 'bogus' (known: name, app, params, resources, parents, inputs, outputs, site, tags)",
        "task 'd': resources.nodes must be a whole number from 1 to 2147483647, got int 0",
    ]
    assert str(error).splitlines() == ["spec: 4 problems:", *(f"  {p}" for p in error.problems)]

    tasks = specs(task("a", app="nosuch"), task("b", parents=["ghost", "c"]), task("c", parents=["b"]))
    error = problems_of(validate, tasks, SITES)
    assert error.problems == [
        "task 'b': parent 'ghost' is not a task of this workflow",
        "task 'a': app 'nosuch' is offered by no registered site (sites: alpha, beta)",
        "cycle: b -> c -> b",
    ]


def test_a_long_list_of_problems_is_cut_short_in_the_message():
    error = problems_of(validate, specs(*(task(f"t{i}", app="nosuch") for i in range(25))), SITES)
    assert len(error.problems) == 25
    lines = str(error).splitlines()
    assert lines[0] == "25 problems:"
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "  ... and 5 more"
    assert pickle.loads(pickle.dumps(error)).problems == error.problems


def test_topological_order_puts_parents_first():
    # A diamond and a chain, given children first.
    tasks = specs(
        task("sink", parents=["left", "right"]),
        task("left", parents=["root"]),
        task("right", parents=["root"]),
        task("root"),
        task("c3", parents=["c2"]),
        task("c2", parents=["c1"]),
        task("c1"),
    )
    order = validate(tasks, SITES)
    assert sorted(order) == sorted(t.name for t in tasks)
    position = {name: i for i, name in enumerate(order)}
    for t in tasks:
        for parent in t.parents:
            assert position[parent] < position[t.name]


def test_added_tasks_may_build_on_existing_ones():
    existing = {"produce": ["out.txt"], "other": []}
    added = [
        task_from_dict(task("next", parents=["produce"], inputs={"in.txt": "produce/out.txt"}), "tasks[0]"),
        task_from_dict(task("last", parents=["next", "other"]), "tasks[1]"),
    ]
    assert validate(added, SITES, existing) == ["next", "last"]
    # Without the existing tasks, the same batch is refused.
    assert problems_of(validate, added, SITES).problems == [
        "task 'next': parent 'produce' is not a task of this workflow",
        "task 'last': parent 'other' is not a task of this workflow",
    ]


def test_added_tasks_are_checked_against_existing_ones():
    existing = {"produce": ["out.txt"]}
    added = specs(
        task("produce"),
        task("next", parents=["produce"]),
        task("late", parents=["missing"], inputs={"a": "next/x"}),
        task("uses", parents=["produce"], inputs={"in.txt": "produce/log.txt"}),
    )
    error = problems_of(validate, added, SITES, existing)
    assert error.problems == [
        "task 'produce' is already a task of this workflow",
        "task 'late': parent 'missing' is not a task of this workflow",
        "task 'late': input 'a' comes from 'next/x', but 'next' is not a parent of this task",
        "task 'uses': input 'in.txt' wants 'log.txt' from task 'produce', which declares no such output "
        "(its outputs: none)",
    ]


def test_input_from_an_existing_parent_must_be_declared():
    added = specs(task("next", parents=["produce"], inputs={"in.txt": "produce/log.txt"}))
    error = problems_of(validate, added, SITES, {"produce": ["out.txt"]})
    assert error.problems == [
        "task 'next': input 'in.txt' wants 'log.txt' from task 'produce', which declares no such output "
        "(its outputs: out.txt)"
    ]


def test_task_from_dict_names_an_unnamed_task_by_its_place():
    error = problems_of(task_from_dict, {"app": "use", "resources": {"nodes": 0}}, "request task 3")
    assert error.problems == [
        "request task 3: task name is required",
        "request task 3: resources.nodes must be a whole number from 1 to 2147483647, got int 0",
    ]
