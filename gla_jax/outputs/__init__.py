"""What the jobs write for people: pictures, overlay videos, metric logs and curves."""
