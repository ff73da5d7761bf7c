"""Where frames come from: capture files now, live interfaces later; both hand batches to the loop."""
