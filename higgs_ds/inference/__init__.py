"""Export (adapter / merged model) and voice-cloning generation through the official serve engine."""
