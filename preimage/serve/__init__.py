"""``preimage serve``: a local web app to watch pre-images form, live, in a browser.

One page (``static/``: plain HTML, CSS and JS, no CDN, works offline) over a JSON API and a
server-sent event stream (:mod:`.app`), a job queue with ``jobs`` worker threads (:mod:`.jobs`),
checked uploads (:mod:`.uploads`), and thin recipes that call :mod:`preimage.tasks` (:mod:`.recipes`):
the same engine and tasks as the CLI, no second implementation of any algorithm.

    >>> from preimage.serve import ServeConfig, create_app
    >>> app = create_app(ServeConfig(out="out/serve", jobs=1))   # then: uvicorn.run(app)

Needs the ``serve`` extra: ``pip install 'preimage[serve]'`` (FastAPI and uvicorn).
"""
from __future__ import annotations

from .config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(config: ServeConfig | None = None):
    """See :func:`preimage.serve.app.create_app` (imported here lazily: FastAPI loads only when used)."""
    from .app import create_app as _create

    return _create(config)
