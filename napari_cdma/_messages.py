"""One way for the dock's panels to tell the user something (Qt-free apart from the label)."""
from __future__ import annotations

from typing import Any


def show_message(label: Any, message: str, error: bool = False) -> None:
    """Put ``message`` in a status ``label``; errors also pop up as a napari notification."""
    label.setText(message)
    if error:
        from napari.utils.notifications import show_error

        show_error(message)
