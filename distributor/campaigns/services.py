"""Creating campaigns and moving them on.

``advance(campaign)`` is the one function that changes a running campaign. It
is idempotent and keeps no state outside the database: it looks at the job of
the campaign's current level and, once that job has finished, submits the
next level — the job, its level row and its set rows in one transaction that
also moves ``Campaign.level`` by compare-and-set. Two callers at once, a
crash half-way or a restart therefore never submit a level twice or leave one
half-written, and calling it again continues exactly where the campaign
stood. The reconciler calls ``advance_all()`` every tick.
"""
from __future__ import annotations

import random

from django.db import transaction
from django.db.models import Count, Q

from distributor.campaigns import generate
from distributor.campaigns.models import Campaign, CampaignLevel, CampaignSet
from distributor.labels import etm_for
from distributor.models import Job, Target, TaskSet
from distributor.queue import reopen_job, submit_job

DEFAULT_MAX_PER_LEVEL = 1000
MAX_PER_LEVEL = 10_000  # distributor.taskfile.MAX_TASKSETS: one job per level


def execution_time_model(target: Target):
    """The target's execution-time model (its ``etm`` setting, else genode-defaults)."""
    return etm_for(target)


def _submit(campaign: Campaign, level: int, tasksets: list[list[dict]]) -> Job:
    name = f"{campaign.name} · level {level}" if campaign.kind == Campaign.Kind.GROW else campaign.name
    data = generate.taskset_file(name[:200], campaign.seed, tasksets)
    return submit_job(data, filename=f"campaign-{campaign.pk}-level-{level}.json", target=campaign.target,
                      name=name[:200], owner=campaign.owner)


# -- random campaigns -------------------------------------------------------------


def create_random(name: str, target: Target, params: generate.RandomParams, seed: int, owner=None) -> Campaign:
    """One job of ``params.count`` UUniFast task-sets; the same seed and
    parameters give the very same job."""
    model = execution_time_model(target)
    tasksets = generate.random_tasksets(params, seed, model)
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=name, kind=Campaign.Kind.RANDOM, target=target, owner=owner, seed=seed, level=1,
            params={**params.as_dict(), "etm": {"name": model.name, "version": model.version}},
        )
        job = _submit(campaign, 1, tasksets)
        CampaignLevel.objects.create(campaign=campaign, number=1, job=job, sets=len(tasksets), candidates=len(tasksets))
    return campaign


# -- growing campaigns ------------------------------------------------------------


def create_growing(name: str, target: Target, fields: dict[str, dict], singles: int, max_size: int, seed: int,
                   max_per_level: int = DEFAULT_MAX_PER_LEVEL, owner=None) -> Campaign:
    """A growing campaign; its first level is submitted at once."""
    if "pkg" not in fields:
        raise generate.ParameterError("--pkg", "required: the packages single tasks are drawn from")
    if not 1 <= singles <= MAX_PER_LEVEL:
        raise generate.ParameterError("--singles", f"must be from 1 to {MAX_PER_LEVEL}")
    if not 1 <= max_size <= 64:
        raise generate.ParameterError("--max-size", "must be from 1 to 64")
    if not 1 <= max_per_level <= MAX_PER_LEVEL:
        raise generate.ParameterError("--max-per-level", f"must be from 1 to {MAX_PER_LEVEL}")
    with transaction.atomic():  # a refused first level leaves no campaign behind
        campaign = Campaign.objects.create(
            name=name, kind=Campaign.Kind.GROW, target=target, owner=owner, seed=seed,
            params={"fields": fields, "singles": singles, "max_size": max_size, "max_per_level": max_per_level},
        )
        advance(campaign)
    campaign.refresh_from_db()
    return campaign


def advance(campaign: Campaign) -> bool:
    """Move ``campaign`` on if its current level is done; True if it changed.

    Safe to call at any time, from any process, any number of times.
    """
    campaign = Campaign.objects.get(pk=campaign.pk)  # never trust a caller's copy
    if campaign.state != Campaign.State.RUNNING:
        return False
    if campaign.level == 0:
        return _submit_level(campaign, 1, _single_sets(campaign))
    level = CampaignLevel.objects.select_related("job").filter(campaign=campaign, number=campaign.level).first()
    if level is None or level.job is None or level.job.state == Job.State.CANCELLED:
        return _end(campaign, Campaign.State.STOPPED, f"the job of level {campaign.level} was cancelled or deleted")
    if level.job.state != Job.State.FINISHED:
        return False
    if campaign.kind == Campaign.Kind.RANDOM or campaign.level >= campaign.params["max_size"]:
        return _end(campaign, Campaign.State.FINISHED)
    candidates = _next_sets(campaign)
    if not candidates:
        return _end(campaign, Campaign.State.FINISHED, f"no schedulable set of level {campaign.level} to grow")
    return _submit_level(campaign, campaign.level + 1, candidates)


def advance_all() -> int:
    """``advance`` every running campaign; a step of every tick (registered
    with the reconciler when the app is ready, so it never wakes it). A campaign
    that fails keeps running with the error on its row: the next tick retries."""
    moved = 0
    for campaign in Campaign.objects.filter(state=Campaign.State.RUNNING).order_by("id"):
        try:
            moved += advance(campaign)
        except Exception as error:  # stored and retried, never fatal to the tick
            campaign.note_error(error)
    return moved


def stop(campaign: Campaign, cancel_level: bool = False) -> bool:
    """Stop growing; the running level's job is left to finish, or with
    ``cancel_level`` cancelled too (its running task-sets finish): the
    campaign stops mid-level, and ``resume`` runs the rest of that level."""
    with transaction.atomic():
        if not _end(campaign, Campaign.State.STOPPED, "stopped by the operator"):
            return False
        if cancel_level:
            level = CampaignLevel.objects.select_related("job").filter(campaign=campaign, number=campaign.level).first()
            if level is not None and level.job is not None:
                level.job.cancel()
    return True


def resume(campaign: Campaign) -> bool:
    """A stopped campaign continues where it stopped: the task-sets its level's
    job did not run (cancelled with it) are queued again, in the same job, so
    the level ends with the very sets it would have had, and the campaign
    moves on as if never stopped. False if it was not stopped."""
    with transaction.atomic():
        if not campaign.resume():
            return False
        level = CampaignLevel.objects.select_related("job").filter(campaign=campaign, number=campaign.level).first()
        if level is not None and level.job is not None and level.job.state == Job.State.CANCELLED:
            reopen_job(level.job)
    return True


def _end(campaign: Campaign, state: str, note: str = "") -> bool:
    return campaign.end(state, note)


def _submit_level(campaign: Campaign, number: int, candidates: list[tuple[list[int], list[dict]]]) -> bool:
    """Submit level ``number`` with up to max_per_level of the candidates (a
    seeded sample, in candidate order); all or nothing."""
    chosen = _sample(campaign, number, candidates)
    with transaction.atomic():
        if not campaign.enter_level(number):
            return False  # another caller submitted it first
        job = _submit(campaign, number, [tasks for _, tasks in chosen])
        CampaignLevel.objects.create(campaign=campaign, number=number, job=job, sets=len(chosen),
                                     candidates=len(candidates))
        CampaignSet.objects.bulk_create([
            CampaignSet(campaign=campaign, level=number, variant=variant, members=members,
                        digest=generate.set_digest(tasks))
            for variant, (members, tasks) in enumerate(chosen)
        ], batch_size=1000)
    return True


def _sample(campaign: Campaign, number: int, candidates: list) -> list:
    limit = campaign.params["singles"] if number == 1 else campaign.params["max_per_level"]
    if len(candidates) <= limit:
        return candidates
    picked = random.Random(f"grow:{campaign.seed}:level:{number}").sample(range(len(candidates)), limit)
    return [candidates[i] for i in sorted(picked)]


def _single_sets(campaign: Campaign) -> list[tuple[list[int], list[dict]]]:
    """Level 1: distinct single tasks drawn from the parameter ranges."""
    rng = random.Random(f"grow:{campaign.seed}:singles")
    wanted, seen, sets = campaign.params["singles"], set(), []
    for _ in range(50 * wanted):
        task = generate.draw_task(rng, campaign.params["fields"])
        digest = generate.task_digest(task)
        if digest not in seen:
            seen.add(digest)
            sets.append(([len(sets)], [task]))
            if len(sets) == wanted:
                break
    return sets


def _schedulable(campaign: Campaign, number: int) -> list[CampaignSet]:
    """The sets of a level whose task-set finished schedulable, in variant order."""
    job_id = CampaignLevel.objects.filter(campaign=campaign, number=number).values_list("job_id", flat=True).get()
    good = set(TaskSet.objects.filter(job_id=job_id, state=TaskSet.State.FINISHED,
                                      outcome=TaskSet.Outcome.SCHEDULABLE).values_list("variant", flat=True))
    return [s for s in CampaignSet.objects.filter(campaign=campaign, level=number).order_by("variant")
            if s.variant in good]


def _next_sets(campaign: Campaign) -> list[tuple[list[int], list[dict]]]:
    """Level n+1: each schedulable set of level n with each schedulable single
    task it does not hold yet; a set reached twice (or run before) once."""
    singles = _schedulable(campaign, 1)
    tasks_of = _single_tasks(campaign)
    seen = set(CampaignSet.objects.filter(campaign=campaign).values_list("digest", flat=True))
    candidates = []
    for grown in _schedulable(campaign, campaign.level):
        for single in singles:
            member = single.members[0]
            if member in grown.members:
                continue
            members = sorted([*grown.members, member])
            tasks = [tasks_of[m] for m in members]
            digest = generate.set_digest(tasks)
            if digest not in seen:
                seen.add(digest)
                candidates.append((members, tasks))
    return candidates


def _single_tasks(campaign: Campaign) -> dict[int, dict]:
    """Level-1 variant → its task, recomputed from the seed (cheap, and the
    database need not keep a copy of every task)."""
    return {members[0]: tasks[0] for members, tasks in _single_sets(campaign)}


# -- progress for the command and the campaign page --------------------------------


def status(campaign: Campaign) -> dict:
    """Everything a campaign page shows, as plain data."""
    campaign.refresh_from_db()
    levels = []
    for level in campaign.levels.select_related("job").order_by("number"):
        counts = {"finished": 0, "schedulable": 0}
        if level.job_id:
            counts = TaskSet.objects.filter(job_id=level.job_id).aggregate(
                finished=Count("id", filter=Q(state=TaskSet.State.FINISHED)),
                schedulable=Count("id", filter=Q(state=TaskSet.State.FINISHED, outcome=TaskSet.Outcome.SCHEDULABLE)),
            )
        # "successful": the old name of "schedulable", kept for scripts (not the
        # exports' "successful", every job ended EXIT)
        levels.append({
            "level": level.number, "job": level.job_id, "job_state": level.job.state if level.job else None,
            "sets": level.sets, "candidates": level.candidates, **counts, "successful": counts["schedulable"],
            "progress": level.job.progress() if level.job else None,
        })
    return {
        "campaign": campaign.pk, "name": campaign.name, "kind": campaign.kind, "state": campaign.state,
        "target": campaign.target.name, "seed": campaign.seed, "level": campaign.level,
        "params": campaign.params, "last_error": campaign.last_error, "levels": levels,
    }
