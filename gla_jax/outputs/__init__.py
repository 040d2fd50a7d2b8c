"""What the jobs write for people: pictures, overlay videos, JSON and Markdown reports, metric
logs and curves."""
