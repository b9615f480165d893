"""Uploads: from a client's start to the file it leaves behind.

Where things are: ``start.py`` (admission, rows, CreateMultipartUpload), ``sign.py`` (part URLs,
part state for resuming), ``complete.py``, ``abort.py``, ``forms.py`` (Uppy's form POSTs),
``batch.py`` (up to 1,000 files started or completed by one request; small ones as one PUT each),
``reaper.py`` (what no request finishes), ``claims.py`` and ``state.py`` (who may change a row),
``finish.py`` (the completion step: the one writer of how an upload ended), ``kinds.py`` (the one
place that knows how bytes reach the store), ``queries.py`` (rows and statements), ``rules.py``
(pure: part plans, keys, names).

The state machine (``state.UPLOAD_TRANSITIONS``; a test holds this table to it). Held states are
claimed by one worker at a time and may be taken over once stale (the ``*``); a claim ends in a
final state through ``finish.finish``, back in ``uploading`` (handed back), or with its rows removed.

| state      | moves to                                                 | by                                |
|------------|----------------------------------------------------------|-----------------------------------|
| creating   | creating*, uploading, (removed)                          | start; a retry; the reaper forgets|
| uploading  | completing, aborting, expiring, deleting                 | complete, abort, reaper, delete   |
| completing | completing*, completed, uploading, expired, aborted      | the completer, or the reaper      |
| aborting   | aborting*, aborted, uploading, completed                 | abort, or the reaper              |
| expiring   | expiring*, expired, uploading, completed, aborted        | the reaper                        |
| deleting   | deleting*, (removed)                                     | an admin's delete, or the reaper  |
| completed  | deleting                                                 | an admin's delete                 |
| aborted    | deleting                                                 | an admin's delete                 |
| expired    | deleting                                                 | an admin's delete                 |

An ending is judged the same on every path (``finish.judge``): the object the store holds must have
the planned size and the declared CRC64NVME, or the upload ends ``aborted`` and the object is
deleted. The file follows its upload: ``available`` when completed, ``failed`` otherwise.
"""
