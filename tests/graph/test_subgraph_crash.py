"""A workflow SIGKILLed inside its subgraph resumes inside it, in a new process.

The workflow (tests/graph/subgraph_crash_workflow.py) runs a three-node subgraph
twice in a loop. Every node records a side effect when it starts. After each
kill the test reads the store: a node is finished when a later checkpoint of its
trace (the parent's, or a subgraph's child trace) exists; a node that started
and is not finished was in flight. In the end:

- every trace finishes with the state of an uninterrupted run;
- every node that finished before a kill, inside the subgraph too, ran exactly
  once: a resume goes on inside the subgraph instead of starting it again;
- a node in flight at kills ran at most once more per such kill, under the same
  idempotency key each time.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from flowpoint import SyncCheckpointStore
from flowpoint.graph._context import node_context
from tests.graph import subgraph_crash_workflow as wf
from tests.graph import subgraph_questions_workflow as questions
from tests.graph.support_crash import (
    KILLS,
    assert_reruns_only_in_flight,
    kill_numbered_traces,
    run_to_end,
    side_effect_lines,
    uninterrupted,
    workflow_command,
)

# Node runs of one trace: the parent's own nodes and the subgraph's, in each child trace.
PARENT_RUNS = 1 + wf.ROUNDS + 1  # plan, count per round, write
CHILD_STEPS = (1, 3)  # the steps the subgraph node runs at: after plan, after each count


def finished_keys(url: str, trace: str) -> set[str]:
    """The keys of the nodes of ``trace`` and its child traces that finished."""
    keys: set[str] = set()
    with SyncCheckpointStore.open(url, wf.Work) as store:
        family = [one for one in store.traces() if one == trace or one.startswith(f"{trace}/")]
        for one in family:
            history = store.history(one, limit=1000)  # newest first
            for info in history[1:]:  # a later checkpoint exists: its node finished
                assert info.current_node is not None
                context = node_context(
                    one, info.checkpoint_id, info.step, 0, info.current_node, info.current_node
                )
                keys.add(context.idempotency_key)
    return keys


def logged(side_effects: Path, trace: str) -> list[tuple[str, str, str]]:
    """``(trace, node, key)`` of every node run of ``trace`` and its children, in order."""
    return [
        (name, node, key)
        for name, node, key in side_effect_lines(side_effects)
        if name == trace or name.startswith(f"{trace}/")
    ]


def workflow(url: str, trace: str, side_effects: Path) -> list[str]:
    return workflow_command("tests.graph.subgraph_crash_workflow", url, trace, str(side_effects))


@pytest.mark.slow
def test_sigkilled_inside_a_subgraph_resumes_inside_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    side_effects = tmp_path / "side-effects.txt"
    rng = random.Random("subgraph-crash")
    reference = uninterrupted(wf.build(None), wf.initial(), "reference")
    in_flight: Counter[str] = Counter()  # key -> kills that caught its node running
    inside = 0
    finished: list[str] = []
    killed = kill_numbered_traces(
        lambda trace: workflow(url, trace, side_effects),
        # Some kills land while the child starts, most inside the subgraph.
        lambda: rng.uniform(0.3, 2.2),
        reference,
        finished,
    )
    for kills, trace in enumerate(killed, start=1):
        runs = logged(side_effects, trace)
        flight = {key for _, _, key in runs} - finished_keys(url, trace)
        in_flight.update(flight)
        inside += any(name != trace and key in flight for name, _, key in runs)
        # At least KILLS kills, and more (up to 4 times as many) until some landed in a
        # subgraph.
        if kills >= KILLS and (inside or kills >= 4 * KILLS):
            break
    # Let the last trace finish (a finished trace resumes to "done" at once).
    assert run_to_end(workflow(url, trace, side_effects)) == reference
    finished.append(trace)

    assert inside >= 1  # some kills caught a subgraph's node running

    for trace in finished:
        with SyncCheckpointStore.open(url, wf.Work) as store:
            children = sorted(one for one in store.traces() if one.startswith(f"{trace}/"))
        assert children == [f"{trace}/research@{step}" for step in CHILD_STEPS]
        runs = logged(side_effects, trace)
        expected = {(trace, "plan"), (trace, "count"), (trace, "write")} | {
            (child, node) for child in children for node in wf.CHILD_NODES
        }
        assert {(name, node) for name, node, _ in runs} == expected
        # One key per node run, the same at every rerun: the parent's count runs twice.
        keys = {key for _, _, key in runs}
        assert len(keys) == PARENT_RUNS + len(children) * len(wf.CHILD_NODES)
        assert_reruns_only_in_flight((key for _, _, key in runs), in_flight, f"{trace}: a node")


@pytest.mark.slow
def test_sigkilled_while_a_subgraph_asks_each_answer_goes_to_its_question(
    tmp_path: Path,
) -> None:
    # A kill between the child trace's pause and its parent's, then a resume that handed
    # the parent's last answer down again, would answer a question with the one before's
    # answer ("q2=a1"): every trace must end as an uninterrupted one.
    url = f"sqlite:///{tmp_path / 'questions.db'}"
    rng = random.Random("subgraph-questions-crash")
    finished: list[str] = []
    killed = kill_numbered_traces(
        lambda trace: workflow_command("tests.graph.subgraph_questions_workflow", url, trace),
        lambda: rng.uniform(0.3, 1.2),
        questions.EXPECTED,
        finished,
    )
    trace = ""
    for kills, killed_trace in enumerate(killed, start=1):
        trace = killed_trace
        if kills >= KILLS and finished:
            break
    # The last trace killed is run to its end.
    assert (
        run_to_end(workflow_command("tests.graph.subgraph_questions_workflow", url, trace))
        == questions.EXPECTED
    )
    with SyncCheckpointStore.open(url) as store:
        children = [one for one in store.traces() if one.startswith(f"{trace}/")]
    assert children == [f"{trace}/interview@1"]  # one child trace across every answer
