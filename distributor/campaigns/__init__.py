"""Campaigns: task-sets the distributor generates itself (DESIGN §7 ``campaign``).

A *random* campaign is one job of task-sets drawn with UUniFast; a *growing*
campaign runs single tasks, then combines the schedulable sets of level n-1
with the schedulable single tasks into level n, as the seeds' generator did.
All of a campaign's state lives in the database, and ``grow.advance`` moves
it on idempotently, so a crash or restart anywhere loses nothing.
"""
