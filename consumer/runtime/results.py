"""What processing one input record yields (runtime/processor.py), and how a result adds to its
batch: a result type, not a sentinel."""

from __future__ import annotations

from dataclasses import dataclass

from consumer.runtime.records import Batch, Output


@dataclass(frozen=True, slots=True)
class Processed:
    """The record was evaluated: its outputs, and what the metrics count."""

    outputs: list[Output]
    category: str
    alerts: list[tuple[str, str, str]]  # (alert_type, code, status)
    transitions: list[tuple[str, str]]  # (transition, code)
    duration: float
    age: float | None


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """The record goes to the dead-letter topic."""

    output: Output
    stage: str
    reason: str
    duration: float


@dataclass(frozen=True, slots=True)
class Retry:
    """The schema registry could not be reached: process the record again later."""


Result = Processed | DeadLettered | Retry


def add_letter(batch: Batch, letter: DeadLettered) -> None:
    """Add the dead-letter copy of a record that was also evaluated (at-least-once, outputs
    refused for good): one more output and dead-letter count, not one more record."""
    batch.outputs.append(letter.output)
    batch.dlq[(letter.stage, letter.reason)] += 1


def add_to(batch: Batch, result: Processed | DeadLettered) -> None:
    """Add a record's outputs and statistics to its batch."""
    if isinstance(result, DeadLettered):
        batch.outputs.append(result.output)
        batch.outcomes["dead_lettered"] += 1
        batch.dlq[(result.stage, result.reason)] += 1
        batch.durations.append(result.duration)
        return
    batch.outputs.extend(result.outputs)
    batch.outcomes["processed"] += 1
    batch.categories[result.category] += 1
    for alert in result.alerts:
        batch.alerts[alert] += 1
    for transition in result.transitions:
        batch.transitions[transition] += 1
    batch.durations.append(result.duration)
    if result.age is not None:
        batch.ages.append(result.age)
