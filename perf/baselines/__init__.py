"""What a user would write instead of distrec, implemented honestly, to compare against."""
