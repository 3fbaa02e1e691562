"""Walk 25: the dock's title bar read "CDMA segmentation (napari-c" at the dock's default width. napari titles a
plugin dock "<widget display_name> (<plugin name>)" when a script opens it, "<widget display_name> (<plugin
display_name>)" from the Plugins menu; both titles are now shown whole at the default width. Real napari viewer under
Xvfb, the dock opened through npe2 both ways."""
from __future__ import annotations

from _dock import PLUGIN, WIDGET, turn


def _title_cut(dock_widget) -> str:
    """'' if the dock's title is shown whole, else what is wrong (title text, its width and the room it has)."""
    title = dock_widget.titleBarWidget().title
    needed = title.fontMetrics().horizontalAdvance(title.text())
    if title.isVisible() and title.width() >= needed:
        return ""
    return f"{title.text()!r} needs {needed} px, has {title.width()} px (dock {dock_widget.width()} px)"


def test_the_dock_title_is_whole_at_the_default_width_when_a_script_opens_it(make_napari_viewer, qtbot):
    from napari_cdma._widget import DOCK_WIDTH

    viewer = make_napari_viewer(show=True)
    dock_widget, _ = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    turn(qtbot, 12)
    assert dock_widget.width() <= DOCK_WIDTH + 10, dock_widget.width()  # the default width
    assert dock_widget.titleBarWidget().title.text() == f"{WIDGET} ({PLUGIN})"
    assert not _title_cut(dock_widget), _title_cut(dock_widget)


def test_the_dock_title_is_whole_when_the_plugins_menu_opens_it(make_napari_viewer, qtbot):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer(show=True)
    app = get_app_model()
    command = f"{PLUGIN}.make_widget"
    menu_title = app.commands[command].title
    app.commands.execute_command(command).result()
    turn(qtbot, 12)
    docks = list(viewer.window._wrapped_dock_widgets.values())
    assert len(docks) == 1
    assert docks[0].titleBarWidget().title.text() == menu_title  # the dock is titled as the menu item
    # as the README names the menu items
    assert menu_title == f"{WIDGET} (CDMA glands)"
    shown = app.commands[f"{PLUGIN}.glas_testA_1"].title.replace("&&", "&")  # "&&": a menu shows one "&"
    assert shown == "GlaS testA_1 (H&E gland sample) (CDMA glands)"
    assert not _title_cut(docks[0]), _title_cut(docks[0])
