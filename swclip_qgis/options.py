"""The provider's page in Settings > Options > Processing > Providers > SW-CLIP.

Processing's own settings mechanism (``ProcessingConfig``), as every Processing provider uses it;
the values are stored under the plugin's own QgsSettings keys, where :mod:`swclip_qgis.backend`
reads them, so the page, the dock and PyQGIS scripts share one setting.
"""

from __future__ import annotations

from qgis.PyQt.QtGui import QIcon

from .backend import CACHE_SETTING_KEY, ENV_VAR, SETTING_KEY

GROUP = "SW-CLIP"
# ProcessingConfig setting name -> (QgsSettings key, description, kind)
SETTINGS = {
    "SWCLIP_BACKEND_PYTHON": (
        SETTING_KEY,
        f"Backend Python (empty: {ENV_VAR}, else the environment of Create backend "
        "environment, or the source checkout's .venv)",
        "file",
    ),
    "SWCLIP_CACHE_DIR": (
        CACHE_SETTING_KEY,
        "Feature cache folder (empty: ~/.cache/swclip)",
        "folder",
    ),
}


def register(icon: QIcon) -> bool:
    """Add the settings to Processing's options; False where Processing's Python is absent."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig, Setting
    except ImportError:
        return False
    kinds = {"file": Setting.FILE, "folder": Setting.FOLDER}
    ProcessingConfig.settingIcons[GROUP] = icon
    for name, (key, description, kind) in SETTINGS.items():
        setting = Setting(GROUP, name, description, "", valuetype=kinds[kind])
        setting.qname = key  # stored where the plugin reads it
        ProcessingConfig.addSetting(setting)
    ProcessingConfig.readSettings()
    return True


def unregister() -> None:
    """Remove the settings from Processing's options."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:
        return
    for name in SETTINGS:
        ProcessingConfig.removeSetting(name)
