"""The book's figures: one module per paper figure, one public function per figure (seaborn/matplotlib)."""
