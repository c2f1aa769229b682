"""The dock's "Backend Python" box: which interpreter runs the models and where that choice comes
from, a picker that sets it, and *Create backend environment* while there is none to run."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsSettings
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import QGroupBox, QLabel, QPushButton, QVBoxLayout, QWidget

from .backend import SETTING_KEY, backend_choice, default_backend_dir


class BackendBox(QGroupBox):
    """Shows the backend choice; ``createRequested`` when the analyst asks for a new one."""

    createRequested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTitle(self.tr("Backend Python"))
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.picker = QgsFileWidget()
        self.picker.setToolTip(
            self.tr("The QGIS setting {}; empty: the environment or the checkout").format(
                SETTING_KEY
            )
        )
        self.picker.setFilePath(QgsSettings().value(SETTING_KEY, "", type=str))
        self.picker.fileChanged.connect(self.set_python)
        # Offered while the backend is missing or a run found it unusable: an analyst's first
        # click should not have to be a trip to the Processing toolbox.
        self.create_button = QPushButton(self.tr("Create backend environment"))
        self.create_button.setToolTip(
            self.tr(
                "Installs torch, open_clip and the other requirements (several GB from the "
                "package index, several minutes) into {}"
            ).format(default_backend_dir())
        )
        self.create_button.clicked.connect(self.createRequested)
        layout = QVBoxLayout(self)
        for widget in (self.label, self.picker, self.create_button):
            layout.addWidget(widget)
        self.show_choice()

    def set_python(self, path: str) -> None:
        """The analyst's pick becomes the QGIS setting (none: the default choice)."""
        if path.strip():
            QgsSettings().setValue(SETTING_KEY, path.strip())
        else:
            QgsSettings().remove(SETTING_KEY)
        self.show_choice()

    def show_choice(self, unusable: bool = False) -> None:
        """Say which Python runs the models; offer to create one if it is missing or
        ``unusable`` (a run just failed to use it)."""
        python, source = backend_choice()
        text = self.tr("Runs {} (from {})").format(python, source)
        missing = not Path(python).is_file()
        if missing:
            text += self.tr(". It does not exist yet.")
        self.label.setText(text)
        self.create_button.setVisible(missing or unusable)

    def offers_creation(self) -> bool:
        """Whether the box asks for a new backend (none exists, or a run could not use it)."""
        return not self.create_button.isHidden()

    def created(self, python: str) -> None:
        """Show the backend that Create backend environment made (it set the setting)."""
        self.picker.setFilePath(python)
        self.show_choice()
