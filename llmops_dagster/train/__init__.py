"""Fine-tuning: QA → chat-formatted SFT dataset (``train.dataset``), LoRA training with MLflow
logging and registration (``train.lora``). Dagster-free."""
