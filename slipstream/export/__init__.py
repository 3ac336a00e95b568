"""Export stage: a Hugging Face *ForSequenceClassification model -> a validated
ONNX artifact (see docs/export.md). The only part of Slipstream that imports
torch, transformers and optimum, and only inside functions, so importing this
package stays cheap.

Entry points: `slipstream.export.api.export_model` and `slipstream export`.
"""
