"""After the upload: every file hashed, identified and previewed by workers on a job queue.

The flow, and who writes what:

1. **Asked for** in the transaction that makes a file ``available`` (``uploads/finish.py`` calls
   ``outbox.ask``): a ``file_processing`` row, ``pending`` and marked for the relay (``outbox_at``,
   the outbox), in one INSERT. ``upload-plane process`` asks again the same way.
2. **Relayed** (``outbox.relay``): marked rows are put on the job queue and their marks cleared, in
   one transaction that locks them (``SKIP LOCKED``: any number of relays). A queue that is down
   keeps them for the next run; nothing is lost. ``outbox.reconcile`` asks again for files whose job
   the queue lost (a Redis restarted without persistence, a job its sweeper aborted).
3. **Processed** (``job.process_file``) by ``upload-plane worker`` processes on SAQ over Redis, or
   in-process (``queue.InProcessQueue``) in the embedded default: the same job function. A job
   takes the row with a token (compare-and-set from ``pending`` or a dead job's ``running``),
   streams the object from the store to compute its SHA-256 (``verify.py``), has a sandboxed
   subprocess identify it and make its preview and media facts (``sandbox.py`` runs
   ``inspect.py`` under limits), and settles the row with its audit events in one transaction that
   matches its token. A re-delivered or duplicated job therefore repeats no effect: a job that
   lost its token records nothing.

Jobs are keyed by file (``process:<file id>``): the queue holds at most one per file.
"""

PREVIEW_NAME = ".preview.jpg"  # object names never start with a dot (uploads/rules.py): no clash


def preview_key_of(key: str) -> str:
    """A file's preview object: beside the file's object, under the file's own prefix."""
    return f"{key.rsplit('/', 1)[0]}/{PREVIEW_NAME}"
