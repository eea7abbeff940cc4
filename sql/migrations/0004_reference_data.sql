-- Ticket statuses and priorities: every deployment needs them (a ticket cannot exist
-- without both), so they ship with the schema rather than with the demo seed. Existing
-- rows win, so a deployment that renamed or re-ordered them keeps its own values.

INSERT INTO ticket_statuses (id, developer_name, label, sort_order, status_type) VALUES
    (1, 'new', 'New', 10, 'open'),
    (2, 'open', 'Open', 20, 'open'),
    (3, 'pending', 'Pending', 30, 'open'),
    (4, 'on_hold', 'On hold', 40, 'open'),
    (5, 'resolved', 'Resolved', 50, 'closed'),
    (6, 'closed', 'Closed', 60, 'closed')
ON CONFLICT DO NOTHING;

-- Lower sort order = more important.
INSERT INTO ticket_priorities (id, developer_name, label, sort_order) VALUES
    (1, 'urgent', 'Urgent', 10),
    (2, 'high', 'High', 20),
    (3, 'normal', 'Normal', 30),
    (4, 'low', 'Low', 40)
ON CONFLICT DO NOTHING;
