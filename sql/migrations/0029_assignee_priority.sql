-- A page of `my-tickets` sorted by priority is read priority by priority, each group in
-- (created_at, id) order (views/compiler.py, _grouped_page), as the team's is through
-- tickets_team_priority_idx. The assignee's own index holds no priority, so a group was
-- the assignee's tickets walked newest first and checked for the priority: the page at
-- row 1,000 took about 495 ms at 10M tickets. With the priority after the assignee, each
-- group is one range of this index: 8 ms.
--
-- Building it reads every ticket once (about 12 s at 10M tickets, 635 MB) while writes to
-- the tickets wait.
SET LOCAL maintenance_work_mem = '256MB';

CREATE INDEX tickets_assignee_priority_idx
    ON tickets (assignee_id, priority_id, created_at DESC, id DESC) INCLUDE (status_id, snoozed_until);
