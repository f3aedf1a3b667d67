"""Training side: dataset readers, the Keras pipeline and its reports (needs the 'train' extra)."""
